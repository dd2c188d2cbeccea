//! `GET /api/openapi.json`: OpenAPI 3.1 generated from the handlers' annotations.

use axum::Json;
use serde_json::{Value, json};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "Durable outbound messages: webhooks, chat, email, SMS."),
    paths(
        super::messages::create, super::messages::batch, super::messages::get, super::messages::attachment,
        super::deliveries::list, super::deliveries::get,
        super::destinations::put, super::destinations::list, super::destinations::get, super::destinations::delete,
        super::destinations::health, super::destinations::test, super::destinations::enable, super::destinations::pause, super::destinations::disable,
        super::dlq::list, super::dlq::replay_one, super::dlq::replay_all, super::dlq::discard,
        super::audit::list, super::audit::verify, super::audit::public_key, super::audit::checkpoint,
        super::errors::create, super::errors::list, super::errors::get, super::errors::resolve, super::errors::unresolve,
        super::sentry::envelope, super::sentry::store, super::apprise::notify, super::apprise::notify_by_header,
        super::tenants::create, super::tenants::list, super::tenants::get, super::tenants::put, super::tenants::patch, super::tenants::delete, super::tenants::portal_access,
        super::tokens::create, super::tokens::list, super::tokens::revoke,
        super::health::healthz, super::health::readyz,
    ),
    modifiers(&Bearer),
    tags(
        (name = "messages", description = "Submit and read messages"),
        (name = "deliveries", description = "Deliveries and their attempts"),
        (name = "destinations", description = "Where messages go"),
        (name = "dlq", description = "Dead-letter queue"),
        (name = "audit", description = "Hash-chained audit log"),
        (name = "errors", description = "Error reports, groups and alerts"),
        (name = "ingest", description = "Sentry- and Apprise-compatible ingest"),
        (name = "tenants", description = "Tenants (Svix applications): the platform's customers; the Svix-compatible API is documented in docs/svix-compatibility.md"),
        (name = "tokens", description = "API tokens"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hrld_…")
                    .build(),
            ),
        );
    }
}

/// Errors any operation may answer, all as problem+json.
const COMMON_ERRORS: &[(&str, &str)] = &[
    ("400", "The body is not valid JSON"),
    ("401", "No token, or a wrong or revoked one"),
    ("403", "The token lacks the scope"),
    ("404", "Unknown id or name"),
    ("409", "Conflicts with the resource's state"),
    ("413", "The body is over the size cap"),
    ("422", "Well-formed but invalid input"),
    ("500", "A bug (storage trouble is never a 500)"),
    (
        "503",
        "Storage is unavailable, or the connection broke while committing (outcome unknown): retry after Retry-After, with the same Idempotency-Key",
    ),
    (
        "507",
        "The disk holding the database is full; nothing was stored (Retry-After)",
    ),
];

/// The document served at `/api/openapi.json`: the generated one, with every operation's
/// error answers documented as `application/problem+json`, and kind settings left open to
/// the `kind` tag that the enclosing `allOf` adds (their `deny_unknown_fields` is enforced
/// by the server, not expressible across an `allOf`).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        let problem_ref = json!({"$ref": "#/components/schemas/Problem"});
        if let Some(paths) = doc["paths"].as_object_mut() {
            for item in paths.values_mut() {
                let Some(item) = item.as_object_mut() else { continue };
                for (method, op) in item.iter_mut() {
                    if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                        continue;
                    }
                    let Some(responses) = op["responses"].as_object_mut() else { continue };
                    for r in responses.values_mut() {
                        if r["content"]["application/json"]["schema"] == problem_ref {
                            let c = r["content"].as_object_mut().expect("content is an object");
                            if let Some(v) = c.remove("application/json") {
                                c.insert("application/problem+json".into(), v);
                            }
                        }
                    }
                    for (code, description) in COMMON_ERRORS {
                        responses.entry(code.to_string()).or_insert_with(|| {
                            json!({"description": description, "content": {"application/problem+json": {"schema": problem_ref}}})
                        });
                    }
                }
            }
        }
        // Downloads are bytes, not an array of integers.
        if let Some(c) = doc["paths"]["/api/v1/messages/{id}/attachments/{n}"]["get"]["responses"]["200"]["content"]["*/*"].as_object_mut() {
            c.insert("schema".into(), json!({"type": "string", "format": "binary"}));
        }
        let kinds: Vec<String> = doc["components"]["schemas"]["KindSpec"]["oneOf"]
            .as_array()
            .map(|v| v.iter().filter_map(|k| k["allOf"][0]["$ref"].as_str()).map(|r| r.trim_start_matches("#/components/schemas/").to_string()).collect())
            .unwrap_or_default();
        for k in kinds {
            if let Some(o) = doc["components"]["schemas"][&k].as_object_mut() {
                o.remove("additionalProperties");
            }
        }
        doc
    })
}

pub async fn spec() -> Json<&'static Value> {
    Json(document())
}
