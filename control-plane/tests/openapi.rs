//! The API document: OpenAPI 3.1, every route in it, every reference
//! resolving, and every schema a valid JSON Schema (2020-12, the dialect
//! of OpenAPI 3.1).

use serde_json::Value;

fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                if key == "$ref"
                    && let Some(target) = item.as_str()
                {
                    found.push(target.to_string());
                }
                refs(item, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| refs(i, found)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_and_covers_every_route() {
    let document = serde_json::to_value(ossature_control_plane::server::openapi()).unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());

    let paths = document["paths"].as_object().unwrap();
    let mut wanted: Vec<String> = ossature_control_plane::commands::NAMES
        .iter()
        .map(|n| format!("/v1/commands/{n}"))
        .chain(
            ossature_control_plane::queries::NAMES
                .iter()
                .map(|n| format!("/v1/queries/{n}")),
        )
        .chain([
            "/v1/commands".to_string(),
            "/v1/queries".to_string(),
            "/v1/streams/tenants/{tenant}".to_string(),
        ])
        .collect();
    wanted.sort();
    let mut documented: Vec<String> = paths.keys().cloned().collect();
    documented.sort();
    assert_eq!(
        documented, wanted,
        "every route is documented, and only routes"
    );

    for (path, item) in paths {
        if path.starts_with("/v1/streams/") {
            let operation = &item["get"];
            assert!(operation.is_object(), "{path} is served by GET");
            let events = &operation["responses"]["200"]["content"]["text/event-stream"]["schema"];
            assert_eq!(events["$ref"], "#/components/schemas/StreamEvent", "{path}");
            for status in ["400", "401", "403", "404", "429"] {
                let problem = &operation["responses"][status]["content"]["application/problem+json"]
                    ["schema"];
                assert_eq!(
                    problem["$ref"], "#/components/schemas/ProblemDocument",
                    "{path} {status}"
                );
            }
            continue;
        }
        let operation = &item["post"];
        assert!(operation.is_object(), "{path} is served by POST");
        let body = &operation["requestBody"]["content"]["application/json"]["schema"];
        assert!(body.is_object(), "{path} documents its body");
        let ok = &operation["responses"]["200"]["content"]["application/json"]["schema"];
        assert!(ok.is_object(), "{path} documents its answer");
        for status in ["400", "401", "403", "422", "429"] {
            let problem =
                &operation["responses"][status]["content"]["application/problem+json"]["schema"];
            assert_eq!(
                problem["$ref"], "#/components/schemas/ProblemDocument",
                "{path} {status}"
            );
        }
        assert_eq!(
            operation["security"][0]["bearer"],
            Value::Array(vec![]),
            "{path}"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').expect("local references only");
        assert!(
            document.pointer(pointer).is_some(),
            "{target} does not resolve"
        );
    }

    let schemas = document["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas {
        // References are resolved above; each schema alone is checked
        // against the JSON Schema 2020-12 meta-schema.
        let mut schema = schema.clone();
        schema.as_object_mut().unwrap().insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        assert!(
            jsonschema::meta::is_valid(&schema),
            "schema {name} is not a valid JSON Schema: {schema}"
        );
    }
    for wanted in [
        "OnboardTenant",
        "CommandResult",
        "ProblemDocument",
        "TenantStatus",
        "BulkCommands",
    ] {
        assert!(
            schemas.contains_key(wanted),
            "{wanted} missing from components"
        );
    }
}
