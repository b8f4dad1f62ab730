//! The admin API under `/api/v1`, as JSON; `openapi.json` beside it describes every route.

use std::collections::BTreeMap;
use std::path::{self as fs_path, Component, PathBuf};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::views::{ClientSample, GroupSample};
use super::HttpState;
use crate::config::{Config, GroupStrategyConfig};
use crate::reload::{self, Trigger};

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

/// A group in a list: everything but its members, which the detail has.
fn summary(sample: &GroupSample) -> Value {
    let mut value = json!(sample);
    if let Some(object) = value.as_object_mut() {
        object.remove("members");
    }
    value
}

pub async fn list_groups(State(http): State<Arc<HttpState>>) -> ApiResult {
    let groups: Vec<Value> = GroupSample::all(&http.broker).iter().map(summary).collect();
    ok(json!({ "groups": groups }))
}

pub async fn group_detail(
    State(http): State<Arc<HttpState>>,
    Path(group): Path<String>,
) -> ApiResult {
    let filters: Vec<GroupSample> = GroupSample::all(&http.broker)
        .into_iter()
        .filter(|g| g.group == group)
        .collect();
    if filters.is_empty() {
        return Err(ApiError::not_found(format!(
            "no shared group named {group:?}"
        )));
    }
    ok(json!({ "group": group, "filters": filters }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareRequest {
    group: String,
    filter: String,
}

/// Declares a group: it exists with or without members, collects while none can take its
/// messages, and is kept across restarts with a store.
pub async fn declare_group(
    State(http): State<Arc<HttpState>>,
    body: Result<Json<DeclareRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let broker = http.broker.clone();
    let (name, filter) = (request.group.clone(), request.filter.clone());
    // A new group's strategy instance is made here: off the async workers.
    let declared = tokio::task::spawn_blocking(move || {
        let existed = broker
            .router
            .group(&name, &filter)
            .is_some_and(|g| g.is_declared());
        broker.declare_group(&name, &filter).map(|_| existed)
    })
    .await?;
    match declared {
        Ok(existed) => {
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                status,
                Json(json!({ "group": request.group, "filter": request.filter, "declared": true })),
            )
                .into_response())
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot declare group {:?} with filter {:?}: {e}",
            request.group, request.filter
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub struct FilterQuery {
    filter: Option<String>,
}

/// Makes a declared group an ordinary one again (it ends now if it has no member).
pub async fn undeclare_group(
    State(http): State<Arc<HttpState>>,
    Path(group): Path<String>,
    Query(query): Query<FilterQuery>,
) -> ApiResult {
    let Some(filter) = query.filter else {
        return Err(ApiError::bad_request(
            "say which group: ?filter=<its topic filter> (URL-encoded)",
        ));
    };
    if http.broker.undeclare_group(&group, &filter) {
        ok(json!({ "group": group, "filter": filter, "declared": false }))
    } else {
        Err(ApiError::not_found(format!(
            "no declared group {group:?} with filter {filter:?}"
        )))
    }
}

/// `PUT /api/v1/groups/{group}/strategy`: a built-in by name or a component file, and its
/// params, as a `[[shared.groups]]` rule has them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyRequest {
    strategy: Option<String>,
    plugin: Option<PathBuf>,
    #[serde(default)]
    params: BTreeMap<String, Value>,
    #[serde(default)]
    wasi: bool,
    memory_mib: Option<u32>,
    deadline_ms: Option<u64>,
    init_deadline_ms: Option<u64>,
}

impl StrategyRequest {
    fn into_rule(self, group: &str) -> Result<GroupStrategyConfig, ApiError> {
        if self.strategy.is_some() == self.plugin.is_some() {
            return Err(ApiError::bad_request("give exactly one of `strategy` (a built-in's name) and `plugin` (a component file)"));
        }
        let mut params = BTreeMap::new();
        for (key, value) in self.params {
            let value = match value {
                Value::String(s) => toml::Value::String(s),
                Value::Bool(b) => toml::Value::Boolean(b),
                Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => toml::Value::Integer(i),
                    (None, Some(f)) => toml::Value::Float(f),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "params.{key}: number out of range"
                        )))
                    }
                },
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "params.{key}: must be a string, number or boolean"
                    )))
                }
            };
            params.insert(key, value);
        }
        Ok(GroupStrategyConfig {
            name: group.to_owned(),
            strategy: self.strategy,
            plugin: self.plugin,
            params,
            wasi: self.wasi,
            memory_mib: self.memory_mib,
            deadline_ms: self.deadline_ms,
            init_deadline_ms: self.init_deadline_ms,
            ..GroupStrategyConfig::default()
        })
    }
}

/// Hot-swaps the strategy of every group with this share name, while messages flow.
pub async fn set_strategy(
    State(http): State<Arc<HttpState>>,
    Path(group): Path<String>,
    body: Result<Json<StrategyRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut rule = request.into_rule(&group)?;
    if let Some(plugin) = rule.plugin.take() {
        let config = http.broker.config.clone();
        // A few file-system calls: off the async workers.
        let confined =
            tokio::task::spawn_blocking(move || confine_plugin(&plugin, &config)).await??;
        rule.plugin = Some(confined);
    }
    swap(&http, group, Some(rule)).await
}

/// The file a plugin path given through the API names, if it may be loaded: inside
/// `shared.plugin_dir` once symbolic links are followed (a relative path is relative to it),
/// a regular file, and starting with the Wasm magic number. Errors name the path as given and
/// never quote the file: the caller must not be able to read files through them.
fn confine_plugin(requested: &fs_path::Path, config: &Config) -> Result<PathBuf, ApiError> {
    let forbidden = |why: &str| ApiError::new(StatusCode::FORBIDDEN, why.to_owned());
    let Some(dir) = &config.shared.plugin_dir else {
        return Err(forbidden("plugin paths are refused through the API unless `shared.plugin_dir` is set; built-in strategies (`strategy`) are not"));
    };
    let dir = config.resolve_path(dir);
    let root = std::fs::canonicalize(&dir).map_err(|e| {
        ApiError::internal(format!(
            "shared.plugin_dir {}: {}",
            dir.display(),
            io_reason(&e)
        ))
    })?;
    let outside = || {
        forbidden(&format!(
            "plugin {}: not inside shared.plugin_dir",
            requested.display()
        ))
    };
    // Checked on the path as written first, so that nothing outside the directory is looked
    // at (and no error tells whether a file there exists).
    if requested
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(outside());
    }
    let joined = if requested.is_absolute() {
        if !(requested.starts_with(&dir) || requested.starts_with(&root)) {
            return Err(outside());
        }
        requested.to_path_buf()
    } else {
        root.join(requested)
    };
    let unusable = |why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "strategy refused, nothing changed: plugin {}: {why}",
                requested.display()
            ),
        )
    };
    let path = std::fs::canonicalize(&joined).map_err(|e| unusable(io_reason(&e)))?;
    // A symbolic link inside the directory may point out of it.
    if !path.starts_with(&root) {
        return Err(outside());
    }
    let mut file = std::fs::File::open(&path).map_err(|e| unusable(io_reason(&e)))?;
    let metadata = file.metadata().map_err(|e| unusable(io_reason(&e)))?;
    if !metadata.is_file() {
        return Err(unusable("not a regular file".to_owned()));
    }
    let mut magic = [0u8; 4];
    let read = std::io::Read::read_exact(&mut file, &mut magic);
    if read.is_err() || magic != *b"\0asm" {
        return Err(unusable(
            "not a WebAssembly component (it does not start with the Wasm magic number)".to_owned(),
        ));
    }
    Ok(path)
}

/// An I/O error's kind in words, without the OS's message (which is about the path anyway).
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        kind => format!("cannot be read ({kind})"),
    }
}

/// Gives the share name back to the config's `[shared]` rules.
pub async fn clear_strategy(
    State(http): State<Arc<HttpState>>,
    Path(group): Path<String>,
) -> ApiResult {
    if !http.broker.strategies.is_overridden(&group) {
        return Err(ApiError::not_found(format!(
            "group {group:?} has no strategy set through the API"
        )));
    }
    swap(&http, group, None).await
}

async fn swap(http: &HttpState, group: String, rule: Option<GroupStrategyConfig>) -> ApiResult {
    let broker = http.broker.clone();
    let name = group.clone();
    // Compiling and initialising a component: off the async workers.
    let swapped =
        tokio::task::spawn_blocking(move || broker.set_group_strategy(&name, rule.as_ref()))
            .await?;
    match swapped {
        Ok(swapped) => {
            let strategy = http
                .broker
                .router
                .groups()
                .into_iter()
                .find(|g| g.name == group)
                .map(|g| g.strategy_label());
            ok(json!({ "group": group, "groups_swapped": swapped, "strategy": strategy }))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("strategy refused, nothing changed: {e}"),
        )),
    }
}

pub async fn purge_group(
    State(http): State<Arc<HttpState>>,
    Path(group): Path<String>,
    Query(query): Query<FilterQuery>,
) -> ApiResult {
    match http.broker.purge_group(&group, query.filter.as_deref()) {
        Some(purged) => ok(json!({ "group": group, "filter": query.filter, "purged": purged })),
        None => Err(ApiError::not_found(match query.filter {
            Some(filter) => format!("no shared group {group:?} with filter {filter:?}"),
            None => format!("no shared group named {group:?}"),
        })),
    }
}

pub async fn list_clients(State(http): State<Arc<HttpState>>) -> ApiResult {
    ok(json!({ "clients": ClientSample::all(&http.broker) }))
}

pub async fn client_detail(
    State(http): State<Arc<HttpState>>,
    Path(client_id): Path<String>,
) -> ApiResult {
    match http.broker.session(&client_id) {
        Some(session) => ok(json!(ClientSample::of(&session))),
        None => Err(ApiError::not_found(format!(
            "no session for client id {client_id:?}"
        ))),
    }
}

/// Closes the client's connection (DISCONNECT 0x98 for v5); its session stays.
pub async fn disconnect_client(
    State(http): State<Arc<HttpState>>,
    Path(client_id): Path<String>,
) -> ApiResult {
    if http.broker.disconnect_client(&client_id) {
        ok(json!({ "client_id": client_id, "disconnected": true }))
    } else {
        Err(ApiError::not_found(format!(
            "client {client_id:?} is not connected"
        )))
    }
}

/// Reloads the config file as SIGHUP does: certificates, users, ACL and strategies.
pub async fn reload_config(State(http): State<Arc<HttpState>>) -> ApiResult {
    let Some(path) = http.broker.config.source.clone() else {
        return Err(ApiError::new(StatusCode::CONFLICT, "the broker runs on the embedded default configuration: there is no file to reload (start it with --config FILE)"));
    };
    if let Err(e) = http.broker.reload_acl() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("ACL refused, nothing changed: {e}"),
        ));
    }
    match reload::reload_once(&http.broker, &path, Trigger::Api).await {
        Ok(_) => ok(json!({ "reloaded": true, "config": path.display().to_string() })),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused, the current configuration stays: {e}"),
        )),
    }
}

pub async fn recent_events(State(http): State<Arc<HttpState>>) -> ApiResult {
    let recent = http.broker.router.events.recent();
    let events: Vec<&crate::broker::events::Event> = recent.iter().map(|e| &**e).collect();
    ok(json!({ "events": events }))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /api/v1/openapi.json)")
}
