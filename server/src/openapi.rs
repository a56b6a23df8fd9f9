//! The OpenAPI 3.1 document of the whole API, served at `/openapi.json`.
//!
//! Built with utoipa's typed builders rather than derived, because the wire
//! types live in robot-api, which does not depend on utoipa. The schemas
//! below mirror `robot_api::wire`; the schemathesis CI step and the
//! integration tests check the server against this document.

use robot_api::wire::{MAX_COLOR_BYTES, MAX_LIST_BYTES, MAX_NAME_BYTES};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
    PathItemBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required};

use crate::routes::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};

const JSON: &str = "application/json";
const BEARER: &str = "bearerAuth";
const ROBOTS_TAG: &str = "robots";

/// The document as JSON; `auth` says whether this server requires a
/// bearer token on the robot endpoints, so the document tells the truth.
pub fn document_json(auth: bool) -> serde_json::Value {
    let mut doc = serde_json::to_value(document(auth)).unwrap_or_default();
    fix_link_keys(&mut doc);
    doc
}

/// utoipa 5.5 writes a Link's fields in snake case (`operation_id`);
/// OpenAPI names them in camel case (`operationId`).
fn fix_link_keys(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (from, to) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(from) {
                link.insert(to.to_owned(), value);
            }
        }
    }
}

fn document(auth: bool) -> OpenApi {
    let secured = |op: OperationBuilder| {
        if auth {
            op.security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
                .response(
                    "401",
                    error("Missing or invalid bearer token; see `WWW-Authenticate`"),
                )
        } else {
            op
        }
    };
    let robots = PathItemBuilder::new()
        .operation(HttpMethod::Get, secured(get_robot()))
        .operation(HttpMethod::Post, secured(create_robot()))
        .operation(HttpMethod::Put, secured(replace_robot()))
        .operation(HttpMethod::Delete, secured(delete_robot()))
        .build();
    let paths = PathsBuilder::new()
        .path("/robots", robots)
        .path(
            "/v1/robots",
            PathItem::new(HttpMethod::Get, secured(list_robots())),
        )
        .path("/healthz", PathItem::new(HttpMethod::Get, healthz()))
        .path("/readyz", PathItem::new(HttpMethod::Get, readyz()))
        .path("/metrics", PathItem::new(HttpMethod::Get, metrics()))
        .path("/openapi.json", PathItem::new(HttpMethod::Get, openapi()));
    let mut components = ComponentsBuilder::new()
        .schema("Robot", robot_schema())
        .schema("RobotList", robot_list_schema())
        .schema("ErrorBody", error_schema())
        .schema("Status", status_schema());
    if auth {
        components = components.security_scheme(
            BEARER,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("robot-server")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A robot store, wire-compatible with provider-dummy's reference server \
                     on /robots. Every error answer is JSON: {\"error\": \"...\"}.",
                )),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

fn robot_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some(
            "A robot. Unknown fields are ignored; a missing color reads as empty.",
        ))
        .property(
            "name",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_NAME_BYTES))
                .description(Some(format!(
                    "Any UTF-8 text of 1 to {MAX_NAME_BYTES} bytes; the key of the robot"
                ))),
        )
        .required("name")
        .property(
            "color",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_COLOR_BYTES))
                .default(Some("".into()))
                .description(Some(format!(
                    "Any UTF-8 text of at most {MAX_COLOR_BYTES} bytes"
                ))),
        )
}

fn robot_list_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("One page of robots, ordered by name"))
        .property(
            "items",
            ArrayBuilder::new().items(Ref::from_schema_name("Robot")),
        )
        .required("items")
        .property(
            "next",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "Pass as `after` for the next page; absent on the last page",
                )),
        )
}

fn error_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some(
            "Every error answer. For the reference server's cases the message is \
             the reference's text: `Robot not found`, `Robot already exists`, \
             `Missing name parameter`, `Method not allowed`.",
        ))
        .property("error", ObjectBuilder::new().schema_type(Type::String))
        .required("error")
}

fn status_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .property("status", ObjectBuilder::new().schema_type(Type::String))
        .required("status")
}

fn json_of(description: &str, schema: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

fn error(description: &str) -> Response {
    json_of(description, "ErrorBody")
}

/// An empty answer with links to the operations that may follow it, with
/// the robot's name taken from `name` (a runtime expression). The links
/// let API fuzzers chain calls: create, then get, replace and delete.
fn empty_linked(description: &str, name: &str, to: &[&str]) -> Response {
    to.iter()
        .fold(ResponseBuilder::new().description(description), |b, op| {
            b.link(
                *op,
                LinkBuilder::new()
                    .operation_id(*op)
                    .parameter("name", name)
                    .build(),
            )
        })
        .build()
}

fn name_param(required: bool) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_NAME_BYTES));
    let (schema, required, description) = if required {
        (
            schema.min_length(Some(1)),
            Required::True,
            "The robot's name, percent-encoded",
        )
    } else {
        (
            schema,
            Required::False,
            "The robot's name, percent-encoded. Absent or empty finds nothing (404), as in the reference server",
        )
    };
    ParameterBuilder::new()
        .name("name")
        .parameter_in(ParameterIn::Query)
        .required(required)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn robot_body() -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .description(Some(format!(
            "The robot as JSON, at most {} bytes; the Content-Type is not checked",
            robot_api::wire::MAX_BODY_BYTES
        )))
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Robot")))
                .build(),
        )
        .build()
}

fn robot_op(id: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .tag(ROBOTS_TAG)
        .response(
            "408",
            error("The request took longer than the request timeout"),
        )
}

fn get_robot() -> OperationBuilder {
    robot_op("getRobot", "Get a robot by name")
        .parameter(name_param(false))
        .response("200", json_of("The robot", "Robot"))
        .response(
            "400",
            error("The name is too long or not UTF-8 once percent-decoded"),
        )
        .response("404", error("`Robot not found`"))
}

fn create_robot() -> OperationBuilder {
    robot_op("createRobot", "Create a robot")
        .request_body(Some(robot_body()))
        .response(
            "201",
            empty_linked(
                "Created; the body is empty",
                "$request.body#/name",
                &["getRobot", "replaceRobot", "deleteRobot"],
            ),
        )
        .response(
            "400",
            error(
                "`Robot already exists`, or the body is not a valid robot \
                 (malformed JSON, empty or too long name, too long color)",
            ),
        )
        .response("413", error("The body is larger than the limit"))
        .response(
            "500",
            error("The change could not be saved to the state file; nothing changed"),
        )
}

fn replace_robot() -> OperationBuilder {
    robot_op(
        "replaceRobot",
        "Replace a robot; the body may carry a new name (a rename)",
    )
    .parameter(name_param(true))
    .request_body(Some(robot_body()))
    .response(
        "200",
        empty_linked(
            "Replaced; the body is empty",
            "$request.body#/name",
            &["getRobot", "deleteRobot"],
        ),
    )
    .response(
        "400",
        error(
            "`Missing name parameter`, the body is not a valid robot, or a rename \
             onto another existing robot (`Robot already exists`)",
        ),
    )
    .response("404", error("`Robot not found`"))
    .response("413", error("The body is larger than the limit"))
    .response(
        "500",
        error("The change could not be saved to the state file; nothing changed"),
    )
}

fn delete_robot() -> OperationBuilder {
    robot_op("deleteRobot", "Delete a robot")
        .parameter(name_param(true))
        .response(
            "200",
            empty_linked(
                "Deleted; the body is empty",
                "$request.query.name",
                &["getRobot"],
            ),
        )
        .response("400", error("`Missing name parameter`, or a bad name"))
        .response("404", error("`Robot not found`"))
        .response(
            "500",
            error("The change could not be saved to the state file; nothing changed"),
        )
}

fn list_robots() -> OperationBuilder {
    let limit = ParameterBuilder::new()
        .name("limit")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("Most robots on one page"))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_LIST_LIMIT))
                .default(Some(DEFAULT_LIST_LIMIT.into())),
        ))
        .build();
    let after = ParameterBuilder::new()
        .name("after")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "Start after this name (the `next` of the previous page)",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    OperationBuilder::new()
        .operation_id(Some("listRobots"))
        .summary(Some("List robots, ordered by name, a page at a time"))
        .description(Some(format!(
            "A page holds at most `limit` robots and at most {MAX_LIST_BYTES} bytes of JSON, \
             so it may hold fewer than `limit` while more follow: go on while `next` is given."
        )))
        .tag(ROBOTS_TAG)
        .parameter(limit)
        .parameter(after)
        .response("200", json_of("One page of robots", "RobotList"))
        .response("400", error("`limit` is not a whole number in range"))
        .response(
            "408",
            error("The request took longer than the request timeout"),
        )
}

fn healthz() -> Operation {
    OperationBuilder::new()
        .operation_id(Some("healthz"))
        .summary(Some("Liveness: the process serves requests"))
        .tag("operations")
        .response("200", json_of("Alive", "Status"))
        .build()
}

fn readyz() -> Operation {
    OperationBuilder::new()
        .operation_id(Some("readyz"))
        .summary(Some("Readiness: the server takes new work"))
        .tag("operations")
        .response("200", json_of("Ready", "Status"))
        .response("503", error("Shutting down"))
        .build()
}

fn metrics() -> Operation {
    let text: RefOr<Schema> = ObjectBuilder::new().schema_type(Type::String).into();
    OperationBuilder::new()
        .operation_id(Some("metrics"))
        .summary(Some("Prometheus metrics"))
        .tag("operations")
        .response(
            "200",
            ResponseBuilder::new()
                .description("The metrics in the OpenMetrics text format")
                .content(
                    crate::routes::OPENMETRICS,
                    ContentBuilder::new().schema(Some(text)).build(),
                )
                .build(),
        )
        .build()
}

fn openapi() -> Operation {
    OperationBuilder::new()
        .operation_id(Some("openapi"))
        .summary(Some("This document"))
        .tag("operations")
        .response(
            "200",
            ResponseBuilder::new()
                .description("The OpenAPI document")
                .content(
                    JSON,
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                        .build(),
                )
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use robot_api::{ErrorBody, Robot, RobotList};

    fn doc(auth: bool) -> serde_json::Value {
        document_json(auth)
    }

    #[test]
    fn links_name_their_operations_as_openapi_does() {
        let doc = doc(false);
        let link = &doc["paths"]["/robots"]["post"]["responses"]["201"]["links"]["getRobot"];
        assert_eq!(link["operationId"], "getRobot");
        assert!(link.get("operation_id").is_none());
        assert_eq!(link["parameters"]["name"], "$request.body#/name");
    }

    #[test]
    fn every_operation_is_described() {
        let doc = doc(false);
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/robots", &["get", "post", "put", "delete"][..]),
            ("/v1/robots", &["get"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
            ("/openapi.json", &["get"]),
        ] {
            for method in methods {
                let op = &paths[path][method];
                assert!(op["responses"].is_object(), "{method} {path}");
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
        assert_eq!(paths.len(), 6);
        assert!(doc["components"]["securitySchemes"].is_null());
        assert!(doc["paths"]["/robots"]["get"]["responses"]["401"].is_null());
    }

    #[test]
    fn auth_shows_when_configured() {
        let doc = doc(true);
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
        for method in ["get", "post", "put", "delete"] {
            let op = &doc["paths"]["/robots"][method];
            assert!(op["responses"]["401"].is_object(), "{method}");
            assert_eq!(op["security"][0][BEARER], serde_json::json!([]));
        }
        assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    }

    #[test]
    fn schemas_mirror_the_wire_types() {
        let doc = doc(false);
        let schemas = &doc["components"]["schemas"];
        let fields = |name: &str| -> Vec<String> {
            let mut f: Vec<String> = schemas[name]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            f.sort();
            f
        };
        let keys = |v: serde_json::Value| -> Vec<String> {
            let mut f: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            f.sort();
            f
        };
        assert_eq!(
            fields("Robot"),
            keys(serde_json::to_value(Robot::new("a", "b")).unwrap())
        );
        assert_eq!(
            fields("ErrorBody"),
            keys(serde_json::to_value(ErrorBody { error: "e".into() }).unwrap())
        );
        let list = RobotList {
            items: vec![],
            next: Some("n".into()),
        };
        assert_eq!(
            fields("RobotList"),
            keys(serde_json::to_value(list).unwrap())
        );
        assert_eq!(
            schemas["Robot"]["properties"]["name"]["maxLength"],
            MAX_NAME_BYTES
        );
    }
}
