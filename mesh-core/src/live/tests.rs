use std::sync::Arc;
use std::thread;

use super::*;
use crate::snapshot::Snapshot;

fn versioned(v: &str) -> Snapshot {
    Snapshot::builder().version(v).build()
}

#[test]
fn publish_replaces_and_counts() {
    let live = LivePolicy::new(versioned("a"));
    assert_eq!(live.load().version(), "a");
    let held = live.snapshot();
    assert_eq!(live.publish(versioned("b")), 1);
    assert_eq!(live.load().version(), "b");
    // A reader that took the old snapshot keeps it whole.
    assert_eq!(held.version(), "a");
}

#[test]
fn watcher_wakes_on_publish_from_another_thread() {
    let live = LivePolicy::new(versioned("0"));
    let mut watch = live.watch();
    let publisher = {
        let live = live.clone();
        thread::spawn(move || {
            for i in 1..=3 {
                live.publish(versioned(&i.to_string()));
            }
        })
    };
    let mut last = String::new();
    while last != "3" {
        let snap = futures_executor::block_on(watch.changed());
        last = snap.version().to_owned();
    }
    publisher.join().expect("publisher");
    assert_eq!(live.generation(), 3);
}

#[test]
fn readers_never_see_a_torn_snapshot() {
    // Each snapshot's version names its single cluster; readers check they always agree.
    let make = |i: u32| {
        let name = format!("c{i}");
        Snapshot::builder()
            .version(&name)
            .cluster(crate::cluster::Cluster::new(&name))
            .build()
    };
    let live = LivePolicy::new(make(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let live = live.clone();
            thread::spawn(move || {
                for _ in 0..20_000 {
                    let s = live.load();
                    let v = s.version().to_owned();
                    assert!(
                        s.cluster(&v).is_some(),
                        "snapshot {v} lacks its own cluster"
                    );
                }
            })
        })
        .collect();
    for i in 1..2_000 {
        live.publish_arc(Arc::new(make(i)));
    }
    for r in readers {
        r.join().expect("reader");
    }
}
