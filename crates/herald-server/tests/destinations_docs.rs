//! The configuration examples in docs/destinations.md load and validate, so the page stays
//! true as kinds change.

use herald_core::template::TemplateEngine;
use herald_server::config::Config;
use std::path::Path;

/// The fenced blocks of one language in a Markdown file.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    markdown
        .split(&fence)
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(b, _)| b.to_string()))
        .collect()
}

#[test]
fn every_toml_example_in_the_destinations_page_loads_and_validates() {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/destinations.md"),
    )
    .unwrap();
    let examples = blocks(&page, "toml");
    assert!(
        examples.len() >= 8,
        "found {} TOML examples",
        examples.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let templates = TemplateEngine::new();
    let mut kinds = std::collections::BTreeSet::new();
    for (i, toml) in examples.iter().enumerate() {
        let path = dir.path().join(format!("example-{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let cfg = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        for (name, spec) in &cfg.destinations {
            spec.validate(name, &templates)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{toml}"));
            kinds.insert(spec.kind.name());
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        vec![
            "discord", "email", "http", "slack", "sms", "teams", "telegram", "webhook"
        ],
        "every kind has a TOML example"
    );
}
