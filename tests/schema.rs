//! The checked-in schema must be exactly what the model generates.
//! Regenerate with: `UPDATE_SCHEMA=1 cargo test --test schema`.

use std::path::Path;

#[test]
fn checked_in_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/runbook.schema.json");
    let fresh = opsbook_engine::schema::runbook_schema_text();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &fresh).expect("write schema");
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "schemas/runbook.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test --test schema` and commit it"
    );
}

#[test]
fn schema_describes_every_top_level_key_for_editors() {
    let schema = opsbook_engine::schema::runbook_schema();
    let props = schema["properties"].as_object().expect("properties");
    for key in [
        "version",
        "name",
        "description",
        "params",
        "vars",
        "env",
        "secrets",
        "inventory",
        "defaults",
        "concurrency",
        "timeout",
        "steps",
        "on_failure",
        "finally",
        "outputs",
    ] {
        let p = &props[key];
        assert!(p.is_object(), "missing {key}");
        assert!(
            p.get("description").is_some(),
            "{key} has no description for editors"
        );
    }
    assert_eq!(schema["additionalProperties"], false);
    let step = &schema["$defs"]["Step"];
    assert_eq!(step["additionalProperties"], false);
    for key in [
        "id",
        "name",
        "description",
        "uses",
        "with",
        "needs",
        "run_on",
        "when",
        "for_each",
        "concurrency",
        "retry",
        "timeout",
        "continue_on_error",
        "outputs",
        "env",
        "rollback",
    ] {
        assert!(step["properties"][key].is_object(), "step has no {key}");
        assert!(
            step["properties"][key].get("description").is_some(),
            "step.{key} has no description"
        );
    }
}
