//! The documented configuration loads, and bad configuration fails with a clear message.

use herald_core::template::TemplateEngine;
use herald_server::config::Config;
use std::path::Path;

#[test]
fn the_example_configuration_loads_and_its_destinations_validate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/herald.toml");
    let cfg = Config::load(Some(&path)).expect("examples/herald.toml loads");
    assert_eq!(cfg.listen, "127.0.0.1:8080");
    assert_eq!(cfg.destinations.len(), 2);
    let t = TemplateEngine::new();
    for (name, spec) in &cfg.destinations {
        spec.validate(name, &t)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
    let err = Config::load(Some(&path)).unwrap_err();
    assert!(err.contains("listen_port"), "{err}");
    std::fs::write(&path, "lease = \"forever\"\n").unwrap();
    let err = Config::load(Some(&path)).unwrap_err();
    assert!(err.contains("forever"), "{err}");
    std::fs::write(&path, "allow_networks = \"10.0.0.0/99\"\n").unwrap();
    assert!(
        Config::load(Some(&path))
            .unwrap_err()
            .contains("allow_networks")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_master_key_refuses_to_start() {
    herald_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        admin_token: Some("hrld_configtestadmin_0123456789abcdef".into()),
        ..Config::default()
    };
    let first = herald_server::start(cfg()).await.unwrap();
    first.shutdown().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    let other = herald_core::crypto::SecretBox::generate_key();
    let err = herald_server::start(Config {
        master_key: Some(other),
        ..cfg()
    })
    .await
    .err()
    .expect("refuses to start");
    assert!(err.contains("master key"), "{err}");
}

#[test]
fn an_empty_short_or_repetitive_admin_token_is_refused() {
    for weak in [
        "",
        "   ",
        "hrld_short",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababababababababab",
        // Long with enough different characters, but one short chunk repeated.
        "01234567890123456789012345678901",
        "password1234password1234password1234",
    ] {
        let c = Config {
            admin_token: Some(weak.into()),
            ..Config::default()
        };
        let e = c.check().expect_err(weak);
        assert!(e.contains("admin_token"), "{weak:?}: {e}");
    }
    let strong = Config {
        admin_token: Some("hrld_0123456789abcdefghijklmnopqrstuv".into()),
        ..Config::default()
    };
    strong.check().expect("a random 37-character token");
    let empty_metrics = Config {
        metrics_token: Some(String::new()),
        ..Config::default()
    };
    assert!(empty_metrics.check().unwrap_err().contains("metrics_token"));
}

/// On earlier builds `HERALD_ADMIN_TOKEN=` started a server that `?sentry_key=` (empty)
/// administered: now it does not start at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_an_empty_admin_token_does_not_start() {
    herald_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let refused = herald_server::start(Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        admin_token: Some(String::new()),
        ..Config::default()
    })
    .await;
    let e = refused.err().expect("refused");
    assert!(e.contains("admin_token"), "{e}");
}
