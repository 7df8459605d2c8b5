//! The OpenAPI document served at `GET /openapi.json`. Paths come from the same handler
//! annotations the router is built from (`utoipa_axum::routes!`), so a route cannot exist
//! without its documentation or the other way round.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Schema};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokenvault",
        description = "Coordinates pools of API credentials across stateless workers: leases \
                       under quota, concurrency, expiry, revocation and binding rules. Errors \
                       are application/problem+json with a stable `code`."
    ),
    components(schemas(crate::error::Problem, vault_core::model::VaultEvent)),
    tags(
        (name = "pools", description = "pool configuration, status, kill switch, emergency rotation (admin)"),
        (name = "tokens", description = "credentials: deposit (deposit), metadata and lifecycle (admin)"),
        (name = "leases", description = "what workers call (lease)"),
        (name = "pipelines", description = "a job's sized, time-bounded share of a pool (lease)"),
        (name = "refresh-jobs", description = "external login workers (admin)"),
        (name = "events", description = "server-sent events (lease or admin)"),
        (name = "clients", description = "the vault's own client tokens (admin)"),
        (name = "audit", description = "the audit trail (audit)"),
        (name = "operations", description = "health, readiness, metrics (no authentication)"),
    )
)]
pub struct ApiDoc;

/// Complete the document once the router has added every path: every `/v1` operation needs a
/// bearer client token and can answer the same four problems; adding them here keeps the
/// handler annotations to what is particular to each route.
pub fn finish(api: &mut utoipa::openapi::OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    // Bodies whose fields are all optional may be left out (the server takes "no body" as `{}`).
    let all_optional: std::collections::HashSet<String> = components
        .schemas
        .iter()
        .filter(|(_, s)| matches!(s, RefOr::T(Schema::Object(o)) if o.required.is_empty()))
        .map(|(name, _)| format!("#/components/schemas/{name}"))
        .collect();
    for (path, item) in api.paths.paths.iter_mut() {
        let v1 = path.starts_with("/v1/");
        for op in operations(item) {
            // Handler names repeat across sections (`get`, `revoke`, `rotate`): prefix the tag.
            if let (Some(tag), Some(id)) =
                (op.tags.as_ref().and_then(|t| t.first()), &op.operation_id)
            {
                op.operation_id = Some(format!("{}_{id}", tag.replace('-', "_")));
            }
            problems_as_problem_json(op);
            if let Some(RefOr::T(body)) = op.request_body.as_mut() {
                let optional = body.content.values().all(|c| {
                    matches!(c, RefOr::T(c) if matches!(&c.schema, Some(RefOr::Ref(r)) if all_optional.contains(&r.ref_location)))
                });
                if optional {
                    body.required = Some(utoipa::openapi::Required::False);
                }
            }
            if !v1 {
                continue;
            }
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            let body_problems = op
                .request_body
                .is_some()
                .then_some(BODY)
                .into_iter()
                .flatten();
            for (status, description) in COMMON.into_iter().chain(body_problems) {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem(description));
            }
        }
    }
}

const COMMON: [(&str, &str); 4] = [
    (
        "400",
        "`invalid_request`: the body, path or query is malformed or out of bounds; `invalid_json`: the body is not one JSON value (a syntax error, a body cut short, or anything but whitespace after the value)",
    ),
    (
        "401",
        "`unauthorized`: no, garbled, expired or revoked client token (with `WWW-Authenticate`)",
    ),
    (
        "403",
        "`forbidden`: the client token lacks the scope or the pool",
    ),
    (
        "503",
        "`redis_unavailable` (Redis cannot be reached), `redis_busy` (Redis did not answer within the budget) or `scripts_unavailable` (with `Retry-After`)",
    ),
];

/// What every route with a request body can also answer.
const BODY: [(&str, &str); 2] = [
    ("413", "`payload_too_large`: bodies are limited to 1 MiB"),
    (
        "415",
        "`unsupported_media_type`: send `Content-Type: application/json`",
    ),
];

/// Answers with the `Problem` schema are `application/problem+json`, as the server sends them.
fn problems_as_problem_json(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_problem = |c: &RefOr<utoipa::openapi::Content>| matches!(c, RefOr::T(c) if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")));
        if response
            .content
            .get("application/json")
            .is_some_and(is_problem)
        {
            if let Some(c) = response.content.shift_remove("application/json") {
                response
                    .content
                    .insert("application/problem+json".into(), c);
            }
        }
    }
}

fn problem(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::response::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

// Path parameters, described once for every route that has them (documentation only: the
// handlers extract and validate them themselves).

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct PoolPath {
    /// Pool name: 1-64 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    pool: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TokenPath {
    /// Pool name: 1-64 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    pool: String,
    /// Token id: 1-128 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,128}$", min_length = 1, max_length = 128)]
    id: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct LeasePath {
    /// Pool name: 1-64 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    pool: String,
    /// Lease id, as the lease answer gave it (1-64 printable ASCII characters).
    #[param(pattern = r"^[!-~]{1,64}$", min_length = 1, max_length = 64)]
    lease: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct PipelinePath {
    /// Pool name: 1-64 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    pool: String,
    /// Pipeline name: 1-64 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    name: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct JobPath {
    /// Pool name: 1-64 characters of `A-Z a-z 0-9 _ . -` (not `.` or `..`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    pool: String,
    /// Refresh job id, as the claim gave it (1-64 printable ASCII characters).
    #[param(pattern = r"^[!-~]{1,64}$", min_length = 1, max_length = 64)]
    job: String,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every operation, parameter and schema property of `/openapi.json` says what it is: the
    /// document is the reference users read (`/docs`).
    #[test]
    fn every_operation_parameter_and_property_is_described() {
        let doc = serde_json::to_value(crate::app::openapi_document()).unwrap();
        let mut missing = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let described = |k: &str| op[k].as_str().is_some_and(|s| !s.trim().is_empty());
                if !described("summary") && !described("description") {
                    missing.push(format!("operation {method} {path}"));
                }
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if !is_described(p) {
                        missing.push(format!("parameter {} of {method} {path}", p["name"]));
                    }
                }
            }
        }
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            undescribed_properties(name, schema, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "{} without a description:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    fn is_described(v: &Value) -> bool {
        v["description"]
            .as_str()
            .is_some_and(|s| !s.trim().is_empty())
            || ["oneOf", "allOf", "anyOf"].iter().any(|k| {
                v[k].as_array()
                    .is_some_and(|o| o.iter().any(|p| p["description"].is_string()))
            })
    }

    /// Properties of `schema` (and of its `allOf`/`oneOf` parts and inline objects) that have
    /// no description.
    fn undescribed_properties(at: &str, schema: &Value, missing: &mut Vec<String>) {
        for (field, p) in schema["properties"].as_object().into_iter().flatten() {
            if !is_described(p) {
                missing.push(format!("property {at}.{field}"));
            }
            undescribed_properties(&format!("{at}.{field}"), p, missing);
            undescribed_properties(&format!("{at}.{field}[]"), &p["items"], missing);
        }
        for k in ["allOf", "oneOf", "anyOf"] {
            for part in schema[k].as_array().into_iter().flatten() {
                undescribed_properties(at, part, missing);
            }
        }
        if schema["additionalProperties"].is_object() {
            undescribed_properties(
                &format!("{at}{{}}"),
                &schema["additionalProperties"],
                missing,
            );
        }
    }
}
