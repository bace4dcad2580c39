use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn istio(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/istio")
        .join(file)
}

fn inline(json: &str) -> Result<Bootstrap, BootstrapError> {
    Bootstrap::from_json(json, BootstrapSource::Inline)
}

#[test]
fn istio_agent_bootstrap_loads() {
    let path = istio("agent-grpc-bootstrap.json");
    let b = Bootstrap::from_vars(|v| (v == BOOTSTRAP_PATH_VAR).then(|| path.display().to_string()))
        .unwrap();
    let server = &b.xds_servers[0];
    assert_eq!(server.server_uri, "unix:///etc/istio/XDS");
    assert_eq!(server.target, ServerTarget::Unix("/etc/istio/XDS".into()));
    assert_eq!(server.channel_creds, ChannelCreds::Insecure);
    assert!(server.has_feature("xds_v3"));
    assert!(!server.ignore_resource_deletion());
    assert_eq!(
        b.node.id,
        "sidecar~127.0.0.1~pod1.fake-namespace~fake-namespace.svc.cluster.local"
    );
    assert_eq!(b.node.metadata_str("GENERATOR"), Some("grpc"));
    assert_eq!(b.node.metadata["PILOT_SAN"][0], "istiod.istio-system.svc");
    assert_eq!(b.node.locality, Some(NodeLocality::default()));
    let CertificateProvider::FileWatcher(fw) = &b.certificate_providers["default"] else {
        panic!("not a file watcher: {:?}", b.certificate_providers);
    };
    assert_eq!(
        fw.certificate_file.as_deref(),
        Some("/cert/path/cert-chain.pem".as_ref())
    );
    assert_eq!(
        fw.private_key_file.as_deref(),
        Some("/cert/path/key.pem".as_ref())
    );
    assert_eq!(
        fw.ca_certificate_file.as_deref(),
        Some("/cert/path/root-cert.pem".as_ref())
    );
    assert_eq!(fw.refresh_interval, Duration::from_secs(900));
    assert_eq!(
        b.server_listener_resource_name_template.as_deref(),
        Some("xds.istio.io/grpc/lds/inbound/%s")
    );
    assert_eq!(b.client_listener_name("svc:80"), "svc:80");
}

#[test]
fn istio_grpcgen_bootstrap_loads_and_ignores_misspelled_key() {
    let b = Bootstrap::from_file(istio("grpcgen-xds-bootstrap.json")).unwrap();
    let server = &b.xds_servers[0];
    assert_eq!(
        server.target,
        ServerTarget::Tcp {
            authority: "localhost:14057".into()
        }
    );
    assert_eq!(b.node.id, "sidecar~127.0.1.1~echo.test~cluster.local");
    assert_eq!(b.node.locality, None, "`localisty` is not `locality`");
    assert_eq!(b.node.metadata_str("NAMESPACE"), Some("test"));
    assert_eq!(b.node.metadata_str("GENERATOR"), Some("grpc"));
    let proto = b.node.to_proto();
    let meta = proto.metadata.unwrap();
    assert!(meta.fields.contains_key("GENERATOR"));
    assert_eq!(meta.fields.len(), 4, "nothing is added to the metadata");
}

#[test]
fn inline_config_var_is_used_when_no_path() {
    let json = r#"{"xds_servers":[{"server_uri":"dns:///istiod.istio-system:15010",
        "channel_creds":[{"type":"fancy"},{"type":"tls"},{"type":"insecure"}],
        "server_features":["xds_v3","ignore_resource_deletion"]}],
        "node":{"id":"n","cluster":"c","locality":{"region":"r","zone":"z","sub_zone":"s"}},
        "client_default_listener_resource_name_template":"xdstp://a/envoy.config.listener.v3.Listener/%s",
        "authorities":{"a":{"xds_servers":[{"server_uri":"unix:rel/sock","channel_creds":[{"type":"insecure"}]}]}}}"#;
    let b = Bootstrap::from_vars(|v| (v == BOOTSTRAP_CONFIG_VAR).then(|| json.to_owned())).unwrap();
    let s = &b.xds_servers[0];
    assert_eq!(
        s.target,
        ServerTarget::Tcp {
            authority: "istiod.istio-system:15010".into()
        }
    );
    assert_eq!(
        s.channel_creds,
        ChannelCreds::Tls { config: None },
        "first supported wins"
    );
    assert!(s.ignore_resource_deletion());
    let loc = b.node.locality.as_ref().unwrap();
    assert_eq!(
        (
            loc.region.as_str(),
            loc.zone.as_str(),
            loc.sub_zone.as_str()
        ),
        ("r", "z", "s")
    );
    assert_eq!(b.node.cluster, "c");
    assert_eq!(
        b.client_listener_name("svc"),
        "xdstp://a/envoy.config.listener.v3.Listener/svc"
    );
    assert_eq!(
        b.authorities["a"].xds_servers[0].target,
        ServerTarget::Unix("rel/sock".into())
    );
    assert!(b.node.to_proto().metadata.is_none());
}

#[test]
fn missing_configuration_is_reported() {
    let err = Bootstrap::from_vars(|_| None).unwrap_err();
    assert!(matches!(err, BootstrapError::NotConfigured), "{err}");
}

#[test]
fn unreadable_file_names_the_path() {
    let err = Bootstrap::from_file("/nonexistent/bootstrap.json").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/bootstrap.json"),
        "{err}"
    );
}

#[test]
fn wrong_json_type_names_the_json_path() {
    let err = inline(r#"{"xds_servers":[{"server_uri":42}]}"#).unwrap_err();
    let BootstrapError::Json { json_path, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(json_path, "xds_servers[0].server_uri");
    let err = Bootstrap::from_vars(|v| (v == BOOTSTRAP_CONFIG_VAR).then(|| "{not json".into()))
        .unwrap_err();
    assert!(
        err.to_string().contains("$GRPC_XDS_BOOTSTRAP_CONFIG"),
        "{err}"
    );
}

#[test]
fn invalid_values_name_the_field() {
    let cases = [
        (r#"{"xds_servers":[]}"#, "xds_servers"),
        (
            r#"{"xds_servers":[{"server_uri":"h:1","channel_creds":[{"type":"x"}]}]}"#,
            "xds_servers[0].channel_creds",
        ),
        (
            r#"{"xds_servers":[{"server_uri":"nohost","channel_creds":[{"type":"insecure"}]}]}"#,
            "xds_servers[0].server_uri",
        ),
        (
            r#"{"xds_servers":[{"server_uri":"h:1","channel_creds":[{"type":"insecure"}]}],
            "certificate_providers":{"default":{"plugin_name":"file_watcher",
            "config":{"ca_certificate_file":"/ca","refresh_interval":"soon"}}}}"#,
            "certificate_providers.default.config.refresh_interval",
        ),
        (
            r#"{"xds_servers":[{"server_uri":"h:1","channel_creds":[{"type":"insecure"}]}],
            "certificate_providers":{"default":{"plugin_name":"file_watcher",
            "config":{"certificate_file":"/c"}}}}"#,
            "certificate_providers.default.config",
        ),
    ];
    for (json, path) in cases {
        match inline(json) {
            Err(BootstrapError::Invalid { json_path, .. }) => assert_eq!(json_path, path, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
}

#[test]
fn durations_parse_like_protobuf_json() {
    assert_eq!(parse_duration("900s"), Some(Duration::from_secs(900)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("s"), None);
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("-1s"), None);
}

#[test]
fn api_type_chooses_the_protocol_flavour_per_server() {
    let b = inline(
        r#"{"xds_servers":[
            {"server_uri":"a:1","channel_creds":[{"type":"insecure"}],"api_type":"DELTA_GRPC"},
            {"server_uri":"b:1","channel_creds":[{"type":"insecure"}],"api_type":"GRPC"},
            {"server_uri":"c:1","channel_creds":[{"type":"insecure"}]}]}"#,
    )
    .unwrap();
    let types: Vec<_> = b.xds_servers.iter().map(|s| s.api_type).collect();
    assert_eq!(
        types,
        [
            Some(crate::ads::Protocol::Delta),
            Some(crate::ads::Protocol::StateOfTheWorld),
            None
        ]
    );
    let err = inline(
        r#"{"xds_servers":[{"server_uri":"a:1","channel_creds":[{"type":"insecure"}]},
            {"server_uri":"b:1","channel_creds":[{"type":"insecure"}],"api_type":"REST"}]}"#,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("xds_servers[1].api_type"), "{text}");
    assert!(text.contains("REST"), "{text}");
}

#[test]
fn tls_channel_creds_keep_their_config() {
    let b = inline(
        r#"{"xds_servers":[{"server_uri":"cp:443","channel_creds":[{"type":"tls",
            "config":{"ca_certificate_file":"/ca.pem"}}]}]}"#,
    )
    .unwrap();
    let ChannelCreds::Tls {
        config: Some(config),
    } = &b.xds_servers[0].channel_creds
    else {
        panic!("{:?}", b.xds_servers[0].channel_creds);
    };
    assert_eq!(config["ca_certificate_file"], "/ca.pem");
}

#[test]
fn bad_tls_channel_creds_are_named_by_path() {
    for (config, path, reason) in [
        (
            r#"{"certificate_file":"/c.pem"}"#,
            "channel_creds[1].config",
            "together",
        ),
        (
            r#"{"ca_certificate_file":7}"#,
            "channel_creds[1].config.ca_certificate_file",
            "string",
        ),
        (r#""/ca.pem""#, "channel_creds[1].config", "object"),
    ] {
        let json = format!(
            r#"{{"xds_servers":[{{"server_uri":"cp:443","channel_creds":[{{"type":"unknown"}},
                {{"type":"tls","config":{config}}}]}}]}}"#
        );
        let text = inline(&json).unwrap_err().to_string();
        assert!(text.contains(&format!("`xds_servers[0].{path}`")), "{text}");
        assert!(text.contains(reason), "{text}");
    }
}
