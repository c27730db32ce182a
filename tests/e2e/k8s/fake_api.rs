//! A fake Kubernetes API server at the HTTP level, for the few endpoints redbridge uses: list and
//! watch (streamed JSON lines of WatchEvents, from a resourceVersion, with label selectors),
//! get, create, server-side apply (`application/apply-patch+yaml`, fieldManager, the status
//! subresource, a `metadata.resourceVersion` in it as a precondition), JSON merge patch (events),
//! update (PUT, with `metadata.resourceVersion` required and checked: 409 when the object changed
//! since, as leader election relies on), and delete. Objects get resourceVersion, uid, generation and creationTimestamp as the real
//! server gives them; a watch with a label selector sees an object that stops matching as
//! DELETED (and one that starts as ADDED), as from the real server. Every request is recorded so
//! tests can assert on what was sent, and by whom (the bearer token of [`FakeApi::client_as`],
//! as the real server authenticates a user); tests change the cluster with [`FakeApi::put`] and
//! [`FakeApi::delete`], which watchers see like any other change.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// A collection: the API path prefix and the resource, e.g. `("api/v1", "pods")`.
pub type Collection = (&'static str, &'static str);

pub const PODS: Collection = ("api/v1", "pods");
pub const ENDPOINT_SLICES: Collection = ("apis/discovery.k8s.io/v1", "endpointslices");
pub const ZSOS: Collection = ("apis/redbridge.io/v1alpha1", "zonalscaledobjects");
pub const SCALED_OBJECTS: Collection = ("apis/keda.sh/v1alpha1", "scaledobjects");
pub const EVENTS: Collection = ("apis/events.k8s.io/v1", "events");
pub const HTTP_ROUTES: Collection = ("apis/gateway.networking.k8s.io/v1", "httproutes");
pub const BACKEND_TRAFFIC_POLICIES: Collection = (
    "apis/gateway.envoyproxy.io/v1alpha1",
    "backendtrafficpolicies",
);
pub const DESTINATION_RULES: Collection = ("apis/networking.istio.io/v1", "destinationrules");
pub const LEASES: Collection = ("apis/coordination.k8s.io/v1", "leases");
pub const INFERENCE_POOLS: Collection = ("apis/inference.networking.k8s.io/v1", "inferencepools");

const KNOWN: [(Collection, &str, &str); 10] = [
    (PODS, "v1", "Pod"),
    (ENDPOINT_SLICES, "discovery.k8s.io/v1", "EndpointSlice"),
    (ZSOS, "redbridge.io/v1alpha1", "ZonalScaledObject"),
    (SCALED_OBJECTS, "keda.sh/v1alpha1", "ScaledObject"),
    (EVENTS, "events.k8s.io/v1", "Event"),
    (HTTP_ROUTES, "gateway.networking.k8s.io/v1", "HTTPRoute"),
    (
        BACKEND_TRAFFIC_POLICIES,
        "gateway.envoyproxy.io/v1alpha1",
        "BackendTrafficPolicy",
    ),
    (
        DESTINATION_RULES,
        "networking.istio.io/v1",
        "DestinationRule",
    ),
    (LEASES, "coordination.k8s.io/v1", "Lease"),
    (
        INFERENCE_POOLS,
        "inference.networking.k8s.io/v1",
        "InferencePool",
    ),
];

type Key = (Collection, String, String);

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
    /// The object before a modification.
    previous: Option<Value>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<Change>,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Who sent it: the bearer token of [`FakeApi::client_as`]; `None` for [`FakeApi::client`].
    pub user: Option<String>,
    /// When it arrived (tokio's clock).
    pub at: tokio::time::Instant,
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

struct Shared {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    requests: Mutex<Vec<Recorded>>,
    /// How long a list of a collection takes, as the first list of a large cluster's Pods does.
    list_delays: Mutex<HashMap<Collection, Duration>>,
    /// Collections whose CRD is not installed: every request to them is a 404.
    uninstalled: Mutex<Vec<Collection>>,
    /// (user, collection) whose writes fail with a 500, as behind a failing network path.
    failing: Mutex<Vec<(String, Collection)>>,
}

pub struct FakeApi {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn collection_of(prefix: &str, resource: &str) -> Option<Collection> {
    KNOWN
        .iter()
        .map(|(c, _, _)| *c)
        .find(|c| c.0 == prefix && c.1 == resource)
}

fn type_of(c: Collection) -> (&'static str, &'static str) {
    KNOWN
        .iter()
        .find(|(k, _, _)| *k == c)
        .map(|(_, api, kind)| (*api, *kind))
        .expect("known collection")
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changes: broadcast::channel(4096).0,
            requests: Mutex::new(Vec::new()),
            list_delays: Mutex::new(HashMap::new()),
            uninstalled: Mutex::new(Vec::new()),
            failing: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { url, shared, task }
    }

    /// A client for this server, as `kube::Client::try_default` would build one for a cluster.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A client authenticated as `user`: its requests are recorded with [`Recorded::user`].
    pub fn client_as(&self, user: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.headers.push((
            axum::http::header::AUTHORIZATION,
            format!("Bearer {user}").parse().unwrap(),
        ));
        kube::Client::try_from(config).unwrap()
    }

    /// From now on, every write (create, update, patch, delete) of `user` to `c` fails (500).
    pub fn fail_writes(&self, user: &str, c: Collection) {
        lock(&self.shared.failing).push((user.to_string(), c));
    }

    /// Writes of `user` to `c` succeed again.
    pub fn heal(&self, user: &str, c: Collection) {
        lock(&self.shared.failing).retain(|(u, k)| !(u == user && *k == c));
    }

    /// Creates or replaces an object, as another client of the cluster would.
    pub fn put(&self, c: Collection, object: Value) -> Value {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        write(&self.shared, (c, ns, name), Write::Replace(object))
    }

    /// Changes an object in place, as another client would (`kubectl edit`).
    pub fn edit(&self, c: Collection, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Value {
        let mut object = self.get(c, ns, name).expect("object to edit exists");
        f(&mut object);
        write(
            &self.shared,
            (c, ns.into(), name.into()),
            Write::Replace(object),
        )
    }

    pub fn delete(&self, c: Collection, ns: &str, name: &str) -> Option<Value> {
        remove(&self.shared, &(c, ns.into(), name.into()))
    }

    pub fn get(&self, c: Collection, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store)
            .objects
            .get(&(c, ns.into(), name.into()))
            .cloned()
    }

    pub fn list(&self, c: Collection) -> Vec<Value> {
        lock(&self.shared.store)
            .objects
            .iter()
            .filter(|(k, _)| k.0 == c)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Lists of `c` answer after `delay` (on tokio's clock) from now on.
    pub fn delay_lists(&self, c: Collection, delay: Duration) {
        lock(&self.shared.list_delays).insert(c, delay);
    }

    /// `c` as on a cluster without its CRD: every request to it is a 404.
    pub fn uninstall(&self, c: Collection) {
        lock(&self.shared.uninstalled).push(c);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }
}

enum Write {
    /// A client's full object (keeps server-set metadata).
    Replace(Value),
    /// Server-side apply of the main resource.
    Apply(Value),
    /// Server-side apply of the status subresource.
    ApplyStatus(Value),
    /// JSON merge patch.
    Merge(Value),
}

/// Merges `patch` into `target`: objects key by key, everything else replaced.
fn merge(target: &mut Value, patch: &Value, null_deletes: bool) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() && null_deletes {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v, null_deletes);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn write(shared: &Shared, key: Key, w: Write) -> Value {
    let mut store = lock(&shared.store);
    write_locked(shared, &mut store, key, w)
}

fn write_locked(shared: &Shared, store: &mut Store, key: Key, w: Write) -> Value {
    store.rv += 1;
    let rv = store.rv;
    let existing = store.objects.get(&key).cloned();
    let (api, kind) = type_of(key.0);
    let mut object = match (&existing, w) {
        (Some(old), Write::Replace(new)) => {
            let mut o = new;
            for f in ["uid", "creationTimestamp", "generation"] {
                if o["metadata"][f].is_null() {
                    o["metadata"][f] = old["metadata"][f].clone();
                }
            }
            if old["spec"] != o["spec"] {
                o["metadata"]["generation"] =
                    json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
            o
        }
        (Some(old), Write::Apply(patch)) => {
            let mut o = old.clone();
            let mut patch = patch;
            if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                for f in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
                    m.remove(f);
                }
            }
            merge(&mut o, &patch, false);
            if old["spec"] != o["spec"] {
                o["metadata"]["generation"] =
                    json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
            o
        }
        (Some(old), Write::ApplyStatus(patch)) => {
            let mut o = old.clone();
            o["status"] = patch["status"].clone();
            o
        }
        (Some(old), Write::Merge(patch)) => {
            let mut o = old.clone();
            merge(&mut o, &patch, true);
            o
        }
        (None, Write::Replace(o) | Write::Apply(o) | Write::Merge(o)) => o,
        (None, Write::ApplyStatus(_)) => unreachable!("checked by the caller"),
    };
    if existing.is_none() {
        store.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", store.uid);
        let m = &mut object["metadata"];
        if m["uid"].is_null() {
            m["uid"] = json!(uid);
        }
        if m["creationTimestamp"].is_null() {
            m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        if m["generation"].is_null() {
            m["generation"] = json!(1);
        }
    }
    object["apiVersion"] = json!(api);
    object["kind"] = json!(kind);
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    if !key.1.is_empty() {
        object["metadata"]["namespace"] = json!(key.1);
    }
    store.objects.insert(key.clone(), object.clone());
    let change = Change {
        rv,
        key,
        kind: if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        },
        object: object.clone(),
        previous: existing,
    };
    store.log.push(change.clone());
    let _ = shared.changes.send(change);
    object
}

fn remove(shared: &Shared, key: &Key) -> Option<Value> {
    let mut store = lock(&shared.store);
    let mut object = store.objects.remove(key)?;
    store.rv += 1;
    let rv = store.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    let change = Change {
        rv,
        key: key.clone(),
        kind: "DELETED",
        object: object.clone(),
        previous: None,
    };
    store.log.push(change.clone());
    let _ = shared.changes.send(change);
    Some(object)
}

/// `key`, `!key`, `key=value`, `key==value`, `key!=value`, comma-separated (all must hold).
fn selector_matches(selector: Option<&String>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    selector.split(',').all(|term| {
        let term = term.trim();
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels[k].is_null()
        } else {
            !labels[term].is_null()
        }
    })
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix_len, prefix) = match *segs.first()? {
        "api" => (2, format!("api/{}", segs.get(1)?)),
        "apis" => (3, format!("apis/{}/{}", segs.get(1)?, segs.get(2)?)),
        _ => return None,
    };
    let rest = &segs[prefix_len..];
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        tail => (None, tail),
    };
    let collection = collection_of(&prefix, rest.first()?)?;
    Some(Target {
        collection,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = uri.query().map(url_pairs).unwrap_or_default();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body)
            .ok()
            .or_else(|| serde_yaml::from_slice(&body).ok())
    };
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    lock(&shared.requests).push(Recorded {
        user: user.clone(),
        at: tokio::time::Instant::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: body_json.clone(),
    });
    let t = parse_path(uri.path()).filter(|t| !lock(&shared.uninstalled).contains(&t.collection));
    let Some(t) = t else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource {}",
                uri.path()
            ),
        );
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let writes = !matches!(method, Method::GET);
    if writes
        && user.as_ref().is_some_and(|u| {
            lock(&shared.failing)
                .iter()
                .any(|(f, c)| f == u && *c == t.collection)
        })
    {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcdserver: request timed out".into(),
        );
    }
    match (method.clone(), t.name.clone()) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(&shared, &t, &query)
        }
        (Method::GET, None) => {
            let delay = lock(&shared.list_delays).get(&t.collection).copied();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let store = lock(&shared.store);
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|(k, _)| k.0 == t.collection && (t.namespace.is_none() || k.1 == ns))
                .map(|(_, v)| v)
                .filter(|v| selector_matches(query.get("labelSelector"), v))
                .cloned()
                .collect();
            let (api, kind) = type_of(t.collection);
            axum::Json(json!({
                "apiVersion": api, "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": store.rv.to_string()},
                "items": items,
            }))
            .into_response()
        }
        (Method::GET, Some(name)) => {
            match lock(&shared.store)
                .objects
                .get(&(t.collection, ns, name.clone()))
            {
                Some(o) => axum::Json(o.clone()).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{} {name:?} not found", t.collection.1),
                ),
            }
        }
        (Method::POST, None) => {
            let Some(mut object) = body_json else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            let name = match object["metadata"]["name"].as_str() {
                Some(n) => n.to_string(),
                None => {
                    let n = format!(
                        "{}{}",
                        object["metadata"]["generateName"].as_str().unwrap_or("x-"),
                        lock(&shared.store).rv
                    );
                    object["metadata"]["name"] = json!(n);
                    n
                }
            };
            let key = (t.collection, ns, name.clone());
            // Checked and written under one lock: of two creates, one gets the 409.
            let mut store = lock(&shared.store);
            if store.objects.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{name:?} already exists"),
                );
            }
            let created = write_locked(&shared, &mut store, key, Write::Replace(object));
            (StatusCode::CREATED, axum::Json(created)).into_response()
        }
        (Method::PATCH, Some(name)) => {
            let Some(patch) = body_json else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            let key = (t.collection, ns, name.clone());
            let exists = lock(&shared.store).objects.contains_key(&key);
            let ct = content_type.unwrap_or_default();
            let w = match (ct.as_str(), t.subresource.as_deref()) {
                ("application/apply-patch+yaml", None) => {
                    if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "fieldManager is required for apply patch".into(),
                        );
                    }
                    if patch["metadata"]["name"].as_str() != Some(name.as_str()) {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "metadata.name must match the URL".into(),
                        );
                    }
                    if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
                        let current = lock(&shared.store).objects.get(&key).map(|o| {
                            o["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string()
                        });
                        if current.as_deref() != Some(want) {
                            return status(
                                StatusCode::CONFLICT,
                                "Conflict",
                                format!("Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again", t.collection.1),
                            );
                        }
                    }
                    Write::Apply(patch)
                }
                ("application/apply-patch+yaml", Some("status")) if exists => {
                    Write::ApplyStatus(patch)
                }
                ("application/merge-patch+json", None) if exists => Write::Merge(patch),
                (_, _) if !exists => {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{} {name:?} not found", t.collection.1),
                    );
                }
                (other, _) => {
                    return status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!("{other} is not supported here"),
                    );
                }
            };
            axum::Json(write(&shared, key, w)).into_response()
        }
        (Method::PUT, Some(name)) => {
            let Some(object) = body_json else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            if object["metadata"]["name"].as_str() != Some(name.as_str()) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "metadata.name must match the URL".into(),
                );
            }
            let key = (t.collection, ns, name.clone());
            // Checked and written under one lock: two updates over the same version cannot
            // both succeed.
            let mut store = lock(&shared.store);
            let Some(current) = store.objects.get(&key) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{} {name:?} not found", t.collection.1),
                );
            };
            let Some(want) = object["metadata"]["resourceVersion"].as_str() else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("{} {name:?} is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update", t.collection.1),
                );
            };
            if current["metadata"]["resourceVersion"].as_str() != Some(want) {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again", t.collection.1),
                );
            }
            let written = write_locked(&shared, &mut store, key, Write::Replace(object));
            axum::Json(written).into_response()
        }
        (Method::DELETE, Some(name)) => match remove(&shared, &(t.collection, ns, name.clone())) {
            Some(o) => axum::Json(o).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} {name:?} not found", t.collection.1),
            ),
        },
        (m, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{m} is not supported here"),
        ),
    }
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A watch: the changes after `resourceVersion`, then live ones, as JSON lines, until
/// `timeoutSeconds`.
fn watch(shared: &Arc<Shared>, t: &Target, query: &HashMap<String, String>) -> Response {
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let selector = query.get("labelSelector").cloned();
    let collection = t.collection;
    let namespace = t.namespace.clone();
    // What a watcher of this collection, namespace and selector sees of a change, if anything.
    let seen = move |c: &Change| -> Option<Bytes> {
        if c.key.0 != collection || namespace.as_ref().is_some_and(|ns| &c.key.1 != ns) {
            return None;
        }
        let now = selector_matches(selector.as_ref(), &c.object);
        let before = c
            .previous
            .as_ref()
            .is_some_and(|p| selector_matches(selector.as_ref(), p));
        match (now, before) {
            (true, false) if c.kind == "MODIFIED" => Some(event_line("ADDED", &c.object)),
            (true, _) => Some(event_line(c.kind, &c.object)),
            (false, true) => {
                let mut gone = c.previous.clone().unwrap_or_default();
                gone["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                Some(event_line("DELETED", &gone))
            }
            (false, false) => None,
        }
    };
    // Subscribe before reading the log, so no change falls between the two.
    let mut live = shared.changes.subscribe();
    let backlog: Vec<(u64, Bytes)> = lock(&shared.store)
        .log
        .iter()
        .filter(|c| c.rv > since)
        .filter_map(|c| Some((c.rv, seen(c)?)))
        .collect();
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let (api, kind) = type_of(collection);
    let stream = async_stream::stream! {
        let mut last = since;
        for (rv, line) in backlog {
            last = rv;
            yield Ok::<Bytes, Infallible>(line);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = bookmark.tick(), if bookmarks => {
                    let b = json!({"type": "BOOKMARK", "object": {"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": last.to_string()}}});
                    yield Ok(Bytes::from(format!("{b}\n")));
                }
                msg = live.recv() => match msg {
                    Ok(c) if c.rv > last => {
                        if let Some(line) = seen(&c) {
                            last = c.rv;
                            yield Ok(line);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}
