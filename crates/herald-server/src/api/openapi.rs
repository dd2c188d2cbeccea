//! `GET /api/openapi.json`: OpenAPI 3.1 generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "Durable outbound messages: webhooks, chat, email, SMS."),
    paths(
        super::messages::create, super::messages::batch, super::messages::get,
        super::deliveries::list, super::deliveries::get,
        super::destinations::put, super::destinations::list, super::destinations::get, super::destinations::delete,
        super::destinations::health, super::destinations::test, super::destinations::enable,
        super::dlq::list, super::dlq::replay_one, super::dlq::replay_all, super::dlq::discard,
        super::audit::list, super::audit::verify, super::audit::public_key, super::audit::checkpoint,
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

pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
