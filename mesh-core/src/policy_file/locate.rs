//! Where a field path (`virtualServices[0].spec.http[1].timeout`) is in YAML text, so that
//! errors found after parsing (a subset that does not exist, weights that do not add up)
//! carry a line and column like syntax errors do.
//!
//! The YAML parser knows where every node starts; this walks the document along the path
//! with a visitor that stops at the node with an error, and the parser stamps that error
//! with the node's position. Block and flow style are handled alike. When the path goes
//! deeper than the document (a field that is missing), the deepest node on the path that
//! exists is given.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The error message that marks "found here" (never shown).
const FOUND: &str = "\u{0}policy-file-locate";

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into steps; `None` for a path it cannot read.
fn steps(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key.to_owned()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            out.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The line and column (1-based) where the node at `path` starts in `text`, or of the
/// deepest node on the path that exists.
pub(crate) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let steps = steps(path)?;
    let de = serde_norway::Deserializer::from_str(text);
    match (Seek { steps: &steps }).deserialize(de) {
        Ok(()) => None,
        // (The message is prefixed with the path the parser followed.)
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// Walks along `steps`; errors with [`FOUND`] at the node they lead to.
struct Seek<'a> {
    steps: &'a [Step],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Seek<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

macro_rules! scalar {
    ($($name:ident: $ty:ty),*) => {$(
        fn $name<E: de::Error>(self, _: $ty) -> Result<(), E> {
            self.here()
        }
    )*};
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(want), rest)) = self.steps.split_first() else {
            return self.here();
        };
        while let Some(key) = map.next_key::<KeyText>()? {
            if key.0.as_deref() == Some(want.as_str()) {
                return map.next_value_seed(Seek { steps: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        // Not there: the map is the closest.
        self.here()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(want), rest)) = self.steps.split_first() else {
            return self.here();
        };
        let mut i = 0;
        loop {
            if i == *want {
                return match seq.next_element_seed(Seek { steps: rest })? {
                    Some(()) => Ok(()),
                    None => self.here(),
                };
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return self.here();
            }
            i += 1;
        }
    }
}

/// A map key as text (numbers and booleans too: `8081:` in `portLevelMtls`).
struct KeyText(Option<String>);

impl<'de> serde::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KeyText, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<KeyText, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "services:\n  - name: pay\n    ports: [{port: 8080}]\nvirtualServices:\n  - spec:\n      hosts: [pay]\n      http:\n        - route: [{destination: {host: pay, subset: b}}]\n        - timeout: 30x\n          route:\n            - destination:\n                host: nope\nportLevel:\n  8081: {mode: DISABLE}\n";

    #[test]
    fn block_and_flow_nodes_are_found() {
        let at = |p| locate(TEXT, p);
        assert_eq!(at("services[0].name"), Some((2, 11)));
        assert_eq!(at("virtualServices[0].spec.http[1].timeout"), Some((9, 20)));
        assert_eq!(
            at("virtualServices[0].spec.http[1].route[0].destination.host"),
            Some((12, 23))
        );
        assert_eq!(
            at("virtualServices[0].spec.http[0].route[0].destination.subset"),
            Some((8, 53))
        );
        assert_eq!(at("portLevel.8081.mode"), Some((14, 16)));
    }

    #[test]
    fn a_missing_field_points_at_the_closest_node() {
        assert_eq!(
            locate(TEXT, "virtualServices[0].spec.http[1].retries"),
            Some((9, 11))
        );
        assert_eq!(locate(TEXT, "virtualServices[3].spec"), Some((5, 3)));
    }

    #[test]
    fn unreadable_paths_and_text_give_nothing() {
        assert_eq!(steps("a[x]"), None);
        assert_eq!(steps(""), None);
        assert_eq!(
            steps("a.b[2][3].c"),
            Some(vec![
                Step::Key("a".into()),
                Step::Key("b".into()),
                Step::Index(2),
                Step::Index(3),
                Step::Key("c".into())
            ])
        );
        assert_eq!(locate("a: b: c\n", "x"), None);
    }
}
