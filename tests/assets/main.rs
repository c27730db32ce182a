//! Deployment assets: every manifest under deploy/ is valid for the kind it claims, the kustomize
//! base builds into a locked-down redbridge, the examples point at it and parse the way redbridge
//! parses them, the Dockerfile (read as text, not built) declares a minimal multi-stage non-root
//! build, and docs/signals.md states what the code does.
//!
//! Built-in kinds are checked with kubernetes-validate (strict, at the oldest and newest Kubernetes
//! we document); custom resources against their CRD's schema: KEDA's from shared/fixtures/keda,
//! ours from crds/, and the ServiceMonitor subset in tests/manifests/schemas/. A kind with no schema
//! fails the test. Overlays are built by a small kustomize here (resources, namespace,
//! configMapGenerator, images, JSON 6902 patches): a kustomization using anything else fails until
//! this file learns it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{json, Value};

use redbridge::config::trigger::TriggerQuery;
use redbridge::model::{Config, Signal};
use redbridge::profiles;

/// Kubernetes versions the manifests must be valid for: the oldest docs/getting-started.md
/// supports, and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every document of a YAML file, as JSON values (empty documents skipped).
fn yaml_docs(p: &Path) -> Vec<Value> {
    let text = read(p);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", rel(p)))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Files under `dir` whose name ends with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p, exts));
        } else if exts.iter().any(|x| p.to_string_lossy().ends_with(x)) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

// ---------------------------------------------------------------------------------------------
// A small kustomize.

/// Kinds that live outside namespaces.
const CLUSTER_SCOPED: [&str; 9] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
];

const KUSTOMIZATION_KEYS: [&str; 7] = [
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "configMapGenerator",
    "images",
    "patches",
];

/// The result of building a kustomization: objects, plus the files its generators read.
#[derive(Default)]
struct Build {
    objects: Vec<Value>,
    generated_from: Vec<PathBuf>,
}

/// Builds the kustomization in `dir` as `kustomize build` would.
fn kustomize(dir: &Path) -> Result<Build, String> {
    let mut b = build_raw(dir)?;
    // Generated ConfigMaps get a hash of their content in their name, and references follow.
    let mut renamed = HashMap::new();
    for o in b.objects.iter_mut() {
        if let Some(g) = o["metadata"]["generatedFrom"].as_str().map(String::from) {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            o["data"].to_string().hash(&mut h);
            let hashed = format!("{g}-{:010x}", h.finish() & 0xff_ffff_ffff);
            o["metadata"]["name"] = json!(hashed);
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("generatedFrom");
            renamed.insert(g, hashed);
        }
    }
    for o in b.objects.iter_mut() {
        rename_config_maps(o, &renamed);
    }
    Ok(b)
}

fn build_raw(dir: &Path) -> Result<Build, String> {
    let kfile = dir.join("kustomization.yaml");
    let at = rel(&kfile);
    let k = yaml_docs(&kfile).pop().ok_or(format!("{at}: empty"))?;
    let map = k.as_object().ok_or(format!("{at}: not a mapping"))?;
    for key in map.keys() {
        if !KUSTOMIZATION_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "{at}: `{key}` is not supported by the kustomize in tests/assets/main.rs \
                 (supported: {}); teach it there",
                KUSTOMIZATION_KEYS.join(", ")
            ));
        }
    }
    if k["kind"] != "Kustomization" || k["apiVersion"] != "kustomize.config.k8s.io/v1beta1" {
        return Err(format!(
            "{at}: needs apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization"
        ));
    }
    let mut build = Build::default();
    for r in k["resources"].as_array().into_iter().flatten() {
        let r = r
            .as_str()
            .ok_or(format!("{at}: a resource is not a string"))?;
        let p = dir.join(r);
        if p.is_dir() {
            if !p.join("kustomization.yaml").is_file() {
                return Err(format!(
                    "{at}: resource {r} is a directory without kustomization.yaml"
                ));
            }
            let sub = build_raw(&p)?;
            build.objects.extend(sub.objects);
            build.generated_from.extend(sub.generated_from);
        } else if p.is_file() {
            build.objects.extend(yaml_docs(&p));
        } else {
            return Err(format!("{at}: resource {r} does not exist"));
        }
    }

    // configMapGenerator: a ConfigMap named with a hash of its content; references follow it.
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        let gname = g["name"]
            .as_str()
            .ok_or(format!("{at}: generator without name"))?;
        let mut data = serde_json::Map::new();
        for f in g["files"].as_array().into_iter().flatten() {
            let f = f
                .as_str()
                .ok_or(format!("{at}: {gname}: a file is not a string"))?;
            let (key, path) = f
                .split_once('=')
                .unwrap_or((Path::new(f).file_name().unwrap().to_str().unwrap(), f));
            let p = dir.join(path);
            if !p.is_file() {
                return Err(format!("{at}: {gname}: file {path} does not exist"));
            }
            data.insert(key.to_string(), json!(read(&p)));
            build.generated_from.push(p);
        }
        let behavior = g["behavior"].as_str().unwrap_or("create");
        let existing = build
            .objects
            .iter()
            .position(|o| kind(o) == "ConfigMap" && o["metadata"]["generatedFrom"] == gname);
        match (behavior, existing) {
            ("create", None) => {
                build.objects.push(json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": { "name": gname, "generatedFrom": gname },
                    "data": data,
                }));
            }
            ("replace", Some(i)) => build.objects[i]["data"] = Value::Object(data),
            ("merge", Some(i)) => {
                for (key, v) in data {
                    build.objects[i]["data"][key] = v;
                }
            }
            (b, e) => {
                return Err(format!(
                    "{at}: generator {gname}: behavior {b} with{} an existing {gname}",
                    if e.is_some() { "" } else { "out" }
                ))
            }
        }
    }

    for p in k["patches"].as_array().into_iter().flatten() {
        let target = &p["target"];
        let ops: Value = serde_yaml::from_str(p["patch"].as_str().unwrap_or(""))
            .map_err(|e| format!("{at}: patch is not YAML: {e}"))?;
        let ops = ops.as_array().ok_or(format!(
            "{at}: only inline JSON 6902 patches (a list of operations) are supported here"
        ))?;
        let mut hit = false;
        for o in build.objects.iter_mut() {
            let matches = ["kind", "name"].iter().all(|f| {
                target[*f].as_str().is_none_or(|want| {
                    if *f == "kind" {
                        kind(o) == want
                    } else {
                        name(o) == want
                    }
                })
            });
            if matches {
                hit = true;
                for op in ops {
                    json_patch(o, op).map_err(|e| format!("{at}: patch on {}: {e}", id(o)))?;
                }
            }
        }
        if !hit {
            return Err(format!("{at}: patch target {target} matches nothing"));
        }
    }

    for img in k["images"].as_array().into_iter().flatten() {
        let iname = img["name"]
            .as_str()
            .ok_or(format!("{at}: image without name"))?;
        let mut hit = false;
        for o in build.objects.iter_mut() {
            for c in containers_mut(o) {
                let current = c["image"].as_str().unwrap_or("").to_string();
                let base = current.split(['@']).next().unwrap();
                let (repo_part, tag) = match base.rsplit_once(':') {
                    Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
                    _ => (base.to_string(), None),
                };
                if repo_part != iname {
                    continue;
                }
                hit = true;
                let new_name = img["newName"].as_str().unwrap_or(&repo_part).to_string();
                let new_tag = img["newTag"].as_str().map(String::from).or(tag);
                c["image"] = json!(match (img["digest"].as_str(), new_tag) {
                    (Some(d), _) => format!("{new_name}@{d}"),
                    (None, Some(t)) => format!("{new_name}:{t}"),
                    (None, None) => new_name,
                });
            }
        }
        if !hit {
            return Err(format!("{at}: image {iname} matches no container"));
        }
    }

    if let Some(ns) = k["namespace"].as_str() {
        let accounts: BTreeSet<String> = build
            .objects
            .iter()
            .filter(|o| kind(o) == "ServiceAccount")
            .map(|o| name(o).to_string())
            .collect();
        for o in build.objects.iter_mut() {
            if !CLUSTER_SCOPED.contains(&kind(o)) {
                o["metadata"]["namespace"] = json!(ns);
            }
            if kind(o).ends_with("RoleBinding") {
                for s in o["subjects"].as_array_mut().into_iter().flatten() {
                    if s["kind"] == "ServiceAccount"
                        && accounts.contains(s["name"].as_str().unwrap_or(""))
                    {
                        s["namespace"] = json!(ns);
                    }
                }
            }
        }
    }

    Ok(build)
}

/// Applies one JSON 6902 operation (add, replace, remove).
fn json_patch(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("operation without path")?;
    let kind = op["op"].as_str().ok_or("operation without op")?;
    let mut parts: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = parts.pop().ok_or("empty path")?;
    let mut node = doc;
    for p in &parts {
        node = match node {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or(format!("{path}: {p} does not exist"))?;
    }
    match (kind, node) {
        ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
        ("add", Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            if i > a.len() {
                return Err(format!("{path}: index out of range"));
            }
            a.insert(i, op["value"].clone());
        }
        ("add" | "replace", Value::Object(m)) => {
            if kind == "replace" && !m.contains_key(&last) {
                return Err(format!("{path}: nothing to replace"));
            }
            m.insert(last, op["value"].clone());
        }
        ("replace", Value::Array(a)) => {
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or(format!("{path}: index out of range"))?;
            *slot = op["value"].clone();
        }
        ("remove", Value::Object(m)) => {
            m.remove(&last)
                .ok_or(format!("{path}: nothing to remove"))?;
        }
        ("remove", Value::Array(a)) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or(format!("{path}: index out of range"))?;
            a.remove(i);
        }
        (k, _) => return Err(format!("{path}: `{k}` is not supported here")),
    }
    Ok(())
}

fn pod_spec_mut(o: &mut Value) -> Option<&mut Value> {
    match kind(o) {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            Some(&mut o["spec"]["template"]["spec"])
        }
        "CronJob" => Some(&mut o["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        "Pod" => Some(&mut o["spec"]),
        _ => None,
    }
}

fn pod_spec(o: &Value) -> Option<&Value> {
    match kind(o) {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            Some(&o["spec"]["template"]["spec"])
        }
        "CronJob" => Some(&o["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        "Pod" => Some(&o["spec"]),
        _ => None,
    }
}

fn containers_mut(o: &mut Value) -> Vec<&mut Value> {
    let Some(spec) = pod_spec_mut(o) else {
        return Vec::new();
    };
    let spec = spec.as_object_mut().unwrap();
    let mut out = Vec::new();
    for (k, v) in spec.iter_mut() {
        if k == "containers" || k == "initContainers" {
            out.extend(v.as_array_mut().into_iter().flatten());
        }
    }
    out
}

fn rename_config_maps(o: &mut Value, renamed: &HashMap<String, String>) {
    let swap = |v: &mut Value| {
        if let Some(new) = v.as_str().and_then(|n| renamed.get(n)) {
            *v = json!(new);
        }
    };
    if let Some(spec) = pod_spec_mut(o) {
        for vol in spec["volumes"].as_array_mut().into_iter().flatten() {
            if vol.get("configMap").is_some() {
                swap(&mut vol["configMap"]["name"]);
            }
        }
    }
    for c in containers_mut(o) {
        for e in c["envFrom"].as_array_mut().into_iter().flatten() {
            if e.get("configMapRef").is_some() {
                swap(&mut e["configMapRef"]["name"]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validators.

/// A tool's path from an environment variable, else `fallback`. Missing is a failure, never a skip.
fn tool(var: &str, fallback: PathBuf, what: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(fallback);
    assert!(
        p.is_file(),
        "{what} not found at {} (set {var}): run scripts/test-all.sh, which installs it",
        p.display()
    );
    p
}

fn kubernetes_validate() -> PathBuf {
    tool(
        "REDBRIDGE_KUBERNETES_VALIDATE",
        repo().join(".venv/bin/kubernetes-validate"),
        "kubernetes-validate (PyPI)",
    )
}

/// The venv's Python, beside kubernetes-validate: it has jsonschema and PyYAML.
fn venv_python() -> PathBuf {
    let kv = kubernetes_validate();
    let py = kv.with_file_name("python");
    assert!(
        py.is_file(),
        "no python beside {}: run scripts/test-all.sh",
        kv.display()
    );
    py
}

/// Files defining the custom resources the manifests may use.
fn crd_files() -> Vec<PathBuf> {
    let keda = redbridge_fixtures::path("keda");
    let mut out = files(&keda, &[".yaml", ".yml"]);
    assert!(
        !out.is_empty(),
        "KEDA's CRDs are missing from {}",
        keda.display()
    );
    out.extend(files(&repo().join("crds"), &[".yaml", ".yml"]));
    out.extend(files(
        &repo().join("tests/manifests/schemas"),
        &[".yaml", ".yml"],
    ));
    out
}

/// Built-in kinds: the core group, unqualified groups (apps, policy, batch) and *.k8s.io.
fn builtin(o: &Value) -> bool {
    let api = o["apiVersion"].as_str().unwrap_or("");
    match api.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

/// Validates every object; returns one line per problem.
fn validate(objects: &[(String, Value)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (origin, o) in objects {
        if o["apiVersion"].as_str().is_none_or(str::is_empty) || kind(o).is_empty() {
            problems.push(format!("{origin}: needs apiVersion and kind"));
        }
        if name(o).is_empty() {
            problems.push(format!("{origin}: needs metadata.name"));
        }
    }
    let (builtins, custom): (Vec<_>, Vec<_>) = objects.iter().partition(|(_, o)| builtin(o));

    // Built-in kinds: kubernetes-validate --strict, one file per object so errors name it.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    let mut origins = HashMap::new();
    for (i, (origin, o)) in builtins.iter().enumerate() {
        let p = dir.path().join(format!("{i:03}.yaml"));
        std::fs::write(&p, serde_json::to_string_pretty(o).unwrap()).unwrap();
        origins.insert(p.display().to_string(), origin.clone());
        paths.push(p);
    }
    if !paths.is_empty() {
        for version in KUBERNETES_VERSIONS {
            let out = Command::new(kubernetes_validate())
                .args(["--strict", "--quiet", "-k", version])
                .args(&paths)
                .output()
                .expect("kubernetes-validate runs");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut line = line.to_string();
                for (p, origin) in &origins {
                    line = line.replace(p.as_str(), origin);
                }
                problems.push(format!("kubernetes {version}: {line}"));
            }
            if !out.status.success() && text.trim().is_empty() {
                problems.push(format!("kubernetes-validate failed: {}", out.status));
            }
        }
    }

    // Custom resources: against their CRD's schema.
    if !custom.is_empty() {
        let request = json!({
            "crds": crd_files().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "objects": custom.iter().map(|(origin, o)| json!({"origin": origin, "object": o})).collect::<Vec<_>>(),
        });
        let mut child = Command::new(venv_python())
            .arg(repo().join("tests/manifests/validate_crd.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        problems.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
        if !out.status.success() && text.trim().is_empty() {
            problems.push(format!("validate_crd.py failed: {}", out.status));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The tests.

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// Every kustomization under deploy/, built.
fn builds() -> Vec<(PathBuf, Build)> {
    files(&deploy(), &["kustomization.yaml"])
        .into_iter()
        .map(|k| {
            let dir = k.parent().unwrap().to_path_buf();
            let b = kustomize(&dir).unwrap_or_else(|e| panic!("{e}"));
            (dir, b)
        })
        .collect()
}

fn base() -> Build {
    kustomize(&deploy().join("base")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_manifest_is_valid_for_its_kind() {
    let builds = builds();
    assert!(
        builds.iter().any(|(d, _)| d.ends_with("deploy/base")),
        "deploy/base/kustomization.yaml is missing"
    );
    let generated: BTreeSet<PathBuf> = builds
        .iter()
        .flat_map(|(_, b)| b.generated_from.iter().cloned())
        .collect();
    let mut objects: Vec<(String, Value)> = Vec::new();
    let mut problems = Vec::new();

    // Each built kustomization, as it would be applied.
    for (dir, b) in &builds {
        let mut seen = BTreeSet::new();
        for o in &b.objects {
            let key = (
                kind(o).to_string(),
                o["metadata"]["namespace"].to_string(),
                name(o).to_string(),
            );
            if !seen.insert(key) {
                problems.push(format!("{}: {} twice", rel(dir), id(o)));
            }
            objects.push((format!("{} (built) {}", rel(dir), id(o)), o.clone()));
        }
    }
    // Each file as written (examples are applied on their own), generator inputs excepted.
    for f in files(&deploy(), &[".yaml", ".yml"]) {
        if f.ends_with("kustomization.yaml") || generated.contains(&f) {
            continue;
        }
        let docs = yaml_docs(&f);
        if docs.is_empty() {
            problems.push(format!("{}: no manifest in it", rel(&f)));
        }
        for o in docs {
            objects.push((format!("{} {}", rel(&f), id(&o)), o));
        }
    }
    // Our CRDs are manifests too.
    for f in files(&repo().join("crds"), &[".yaml", ".yml"]) {
        for o in yaml_docs(&f) {
            objects.push((format!("{} {}", rel(&f), id(&o)), o));
        }
    }
    problems.extend(validate(&objects));

    // A file beside a kustomization that it does not use is a mistake.
    for (dir, _) in &builds {
        let k = yaml_docs(&dir.join("kustomization.yaml")).pop().unwrap();
        let mut used: BTreeSet<PathBuf> = k["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .map(|r| dir.join(r))
            .collect();
        for g in k["configMapGenerator"].as_array().into_iter().flatten() {
            for f in g["files"].as_array().into_iter().flatten() {
                let f = f.as_str().unwrap();
                used.insert(dir.join(f.split_once('=').map_or(f, |(_, p)| p)));
            }
        }
        let examples = dir.starts_with(deploy().join("examples")) || *dir == deploy();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let yaml = p.extension().is_some_and(|x| x == "yaml" || x == "yml");
            if yaml && !p.ends_with("kustomization.yaml") && !used.contains(&p) && !examples {
                problems.push(format!(
                    "{} is not listed in {}/kustomization.yaml",
                    rel(&p),
                    rel(dir)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_validators_refuse_what_kubernetes_would() {
    let bad = vec![
        (
            "typo in a built-in kind".to_string(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                   "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selectr": {}}}),
        ),
        (
            "non-string trigger metadata".to_string(),
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                   "metadata": {"name": "x", "namespace": "ml"},
                   "spec": {"scaleTargetRef": {"name": "x"},
                            "triggers": [{"type": "external", "metadata": {"target": 10}}]}}),
        ),
        (
            "unknown field in a custom resource".to_string(),
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                   "metadata": {"name": "x"}, "spec": {"secretTargetRefs": []}}),
        ),
        (
            "a kind nobody defines".to_string(),
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}),
        ),
    ];
    let problems = validate(&bad);
    for (what, _) in &bad {
        assert!(
            problems.iter().any(|p| p.contains(what.as_str())),
            "{what} was not refused; problems: {problems:#?}"
        );
    }
    assert!(problems
        .iter()
        .any(|p| p.contains("no schema for kind Widget")));
}

/// The container named redbridge in the base's Deployment.
fn redbridge_deployment(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| kind(o) == "Deployment" && name(o) == "redbridge")
        .expect("a Deployment named redbridge")
}

fn container<'a>(deployment: &'a Value, cname: &str) -> &'a Value {
    pod_spec(deployment).unwrap()["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cname)
        .unwrap_or_else(|| panic!("no container {cname}"))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

/// `--flag=value` or `--flag value` from container args.
fn flag(args: &[String], f: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{f}="))
            .map(String::from)
            .or_else(|| (a == f).then(|| args.get(i + 1).cloned()).flatten())
    })
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

/// The file a container path resolves to through its volume mounts: (volume, path inside it).
fn mounted<'a>(pod: &'a Value, c: &Value, path: &str) -> Option<(&'a Value, String)> {
    c["volumeMounts"].as_array()?.iter().find_map(|m| {
        let at = m["mountPath"].as_str()?.trim_end_matches('/');
        let inside = path.strip_prefix(at)?.strip_prefix('/')?;
        let vol = pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == m["name"])?;
        Some((vol, inside.to_string()))
    })
}

#[test]
fn the_base_is_a_locked_down_redbridge() {
    let b = base();
    let objects = &b.objects;
    fn of<'a>(objects: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> {
        objects.iter().filter(move |o| kind(o) == k)
    }
    let of = |k: &'static str| of(objects, k);
    for k in [
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
    ] {
        assert!(of(k).next().is_some(), "the base has no {k}");
    }
    let ns = name(of("Namespace").next().unwrap()).to_string();
    for o in objects.iter().filter(|o| kind(o) != "Namespace") {
        if !CLUSTER_SCOPED.contains(&kind(o)) {
            assert_eq!(o["metadata"]["namespace"], ns, "{} outside {ns}", id(o));
        }
    }

    // Least privilege: no token unless some role grants something, and no wildcard grants.
    let roles: Vec<&Value> = objects
        .iter()
        .filter(|o| matches!(kind(o), "Role" | "ClusterRole"))
        .collect();
    for r in &roles {
        for rule in r["rules"].as_array().into_iter().flatten() {
            for field in ["verbs", "resources", "apiGroups"] {
                let wild = rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v == "*");
                assert!(!wild, "{} grants * in {field}: {rule}", id(r));
            }
        }
    }
    let d = redbridge_deployment(objects);
    let pod = pod_spec(d).unwrap();
    let sa_name = pod["serviceAccountName"]
        .as_str()
        .expect("a serviceAccountName");
    let sa = of("ServiceAccount")
        .find(|s| name(s) == sa_name)
        .unwrap_or_else(|| panic!("ServiceAccount {sa_name} is not in the base"));
    let bound = objects.iter().any(|o| {
        kind(o).ends_with("RoleBinding")
            && o["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa_name)
    });
    if !bound {
        assert_eq!(
            sa["automountServiceAccountToken"], false,
            "an unbound ServiceAccount must not mount a token"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
    }

    // Non-root, read-only, no privilege, seccomp, resources, probes.
    let c = container(d, "redbridge");
    let sc = &c["securityContext"];
    let psc = &pod["securityContext"];
    let either = |k: &str| if sc[k].is_null() { &psc[k] } else { &sc[k] };
    assert_eq!(either("runAsNonRoot"), true);
    assert!(
        either("runAsUser").as_u64().is_some_and(|u| u > 0),
        "runAsUser must be non-zero"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(either("seccompProfile")["type"], "RuntimeDefault");
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "no {r} request");
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "no memory limit"
    );
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = get["port"].as_str().unwrap_or_default();
        assert_eq!(
            ports.get(port),
            Some(&8080),
            "{probe} must use the http port"
        );
    }

    // The arguments redbridge parses, and its config from the generated ConfigMap.
    let a = args(c);
    assert!(
        a.iter().any(|x| x == "serve"),
        "redbridge must run `serve`: {a:?}"
    );
    for (f, port) in [("--grpc-listen", "grpc"), ("--http-listen", "http")] {
        let listen = flag(&a, f)
            .unwrap_or_else(|| format!("0.0.0.0:{}", if port == "grpc" { 9090 } else { 8080 }));
        assert!(
            listen.ends_with(&format!(":{}", ports[port])),
            "{f} {listen} vs port {port}"
        );
    }
    let config_path = flag(&a, "--config").expect("--config");
    let (vol, file) = mounted(pod, c, &config_path).expect("--config is on a volume");
    let cm_name = vol["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    let cm = of("ConfigMap")
        .find(|m| name(m) == cm_name)
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} is not in the base"));
    let pools = cm["data"][&file]
        .as_str()
        .expect("the ConfigMap holds the config file");
    let config = Config::from_yaml(pools, &file).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.pools.is_empty());
    assert!(
        c["image"]
            .as_str()
            .is_some_and(|i| i.contains(':') || i.contains('@')),
        "the image needs a tag or digest: {}",
        c["image"]
    );

    // The real binary accepts the arguments (with its config and ports swapped for local ones).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("pools.yaml");
    std::fs::write(
        &local,
        "pools:\n  - name: p\n    sources:\n      - profile: envoy\n        targets:\n          \
         - { url: \"http://127.0.0.1:9/stats/prometheus\", zone: z }\n",
    )
    .unwrap();
    let swapped: Vec<String> = a
        .iter()
        .map(|x| match x.split_once('=') {
            Some(("--config", _)) => format!("--config={}", local.display()),
            Some(("--grpc-listen" | "--http-listen", _)) => {
                format!("{}=127.0.0.1:0", x.split('=').next().unwrap())
            }
            _ => x.clone(),
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redbridge"))
        .args(&swapped)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    if let Some(status) = child.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("redbridge {swapped:?} exited ({status}): {err}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Services and the PDB select the pods and use the container's named ports.
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    assert!(labels_match(
        &d["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let mut service_ports = BTreeSet::new();
    for s in of("Service") {
        assert!(
            labels_match(&s["spec"]["selector"], pod_labels),
            "{} selects no pod",
            id(s)
        );
        for p in s["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().expect("named targetPorts");
            assert!(
                ports.contains_key(target),
                "{}: no container port {target}",
                id(s)
            );
            service_ports.insert((
                name(s).to_string(),
                target.to_string(),
                s["spec"]["clusterIP"] == "None",
            ));
        }
    }
    assert!(
        service_ports
            .iter()
            .any(|(_, t, headless)| t == "grpc" && *headless),
        "KEDA needs a headless Service on the grpc port, to balance over replicas"
    );
    assert!(service_ports.iter().any(|(_, t, _)| t == "http"));
    for p in of("PodDisruptionBudget") {
        assert!(labels_match(
            &p["spec"]["selector"]["matchLabels"],
            pod_labels
        ));
        assert_eq!(
            p["spec"]["minAvailable"], 1,
            "a drain must leave KEDA a ready replica"
        );
    }
    let rolling = &d["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        rolling["maxUnavailable"], 0,
        "a rollout replaces one replica at a time, once the new one is ready"
    );
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
            == "/readyz",
        "rollouts are gated on /readyz"
    );
    assert!(
        d["spec"]["replicas"].as_u64().unwrap_or(1) >= 2,
        "one replica is one outage"
    );
}

/// docs/signals.md's first table: signal name -> recommended metricType.
fn recommended_metric_types() -> BTreeMap<String, String> {
    let rows = markdown_table(&read(&repo().join("docs/signals.md")), "Signal", "Unit");
    rows.into_iter()
        .map(|r| {
            let metric_type = r.iter().find(|c| *c == "AverageValue" || *c == "Value");
            (
                r[0].trim_matches('`').to_string(),
                metric_type.cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// Rows of the first Markdown table whose header starts with `first` | `second`.
fn markdown_table(text: &str, first: &str, second: &str) -> Vec<Vec<String>> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = text.lines().skip_while(|l| {
        let c = cells(l);
        !(l.trim_start().starts_with('|') && c.len() > 1 && c[0] == first && c[1] == second)
    });
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no table starting | {first} | {second} |"));
    let mut rows = vec![cells(header)];
    rows.extend(
        lines
            .skip(1)
            .take_while(|l| l.trim_start().starts_with('|'))
            .map(cells),
    );
    rows.remove(0);
    rows
}

#[test]
fn the_examples_point_at_the_base_and_parse_like_redbridge() {
    let b = base();
    let objects = &b.objects;
    let cm = objects.iter().find(|o| kind(o) == "ConfigMap").unwrap();
    let pools_yaml = cm["data"]["pools.yaml"].as_str().unwrap();
    let config = Config::from_yaml(pools_yaml, "pools.yaml").unwrap();
    let grpc = objects
        .iter()
        .find(|o| {
            kind(o) == "Service"
                && o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["targetPort"] == "grpc")
        })
        .unwrap();
    let grpc_port = grpc["spec"]["ports"][0]["port"].as_u64().unwrap();
    let address = format!(
        "{}.{}.svc:{grpc_port}",
        name(grpc),
        grpc["metadata"]["namespace"].as_str().unwrap()
    );
    let recommended = recommended_metric_types();

    let examples: Vec<(String, Value)> = files(&deploy().join("examples"), &[".yaml"])
        .into_iter()
        .filter(|f| !f.ends_with("kustomization.yaml"))
        .flat_map(|f| yaml_docs(&f).into_iter().map(move |o| (rel(&f), o)))
        .collect();
    let auths: BTreeSet<(String, String)> = examples
        .iter()
        .filter(|(_, o)| kind(o) == "TriggerAuthentication")
        .map(|(_, o)| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
                name(o).to_string(),
            )
        })
        .collect();
    let mut scaled = 0;
    for (file, o) in &examples {
        let at = format!("{file} {}", id(o));
        match kind(o) {
            "ScaledObject" => {
                scaled += 1;
                let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
                let triggers = o["spec"]["triggers"].as_array().unwrap();
                let mut all_average = true;
                for t in triggers {
                    let ty = t["type"].as_str().unwrap();
                    assert!(
                        ty == "external-push" || ty == "external",
                        "{at}: trigger type {ty}"
                    );
                    let meta: HashMap<String, String> = t["metadata"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    assert_eq!(meta["scalerAddress"], address, "{at}: scalerAddress");
                    let q = TriggerQuery::from_metadata(&meta)
                        .unwrap_or_else(|e| panic!("{at}: redbridge refuses the metadata: {e}"));
                    let pool = config.pool(&q.pool, ns).unwrap_or_else(|| {
                        panic!("{at}: no pool {} for namespace {ns} in the base", q.pool)
                    });
                    assert!(
                        pool.sources.iter().any(|s| s.profile.supports(q.signal)),
                        "{at}: pool {} provides no {}",
                        q.pool,
                        q.signal.name()
                    );
                    let metric_type = t["metricType"].as_str().unwrap_or("AverageValue");
                    all_average &= metric_type == "AverageValue";
                    assert_eq!(
                        Some(&metric_type.to_string()),
                        recommended.get(q.signal.base_name()),
                        "{at}: {} is not the metricType docs/signals.md recommends",
                        q.signal.base_name()
                    );
                    if let Some(auth) = t["authenticationRef"]["name"].as_str() {
                        assert!(
                            auths.contains(&(ns.to_string(), auth.to_string())),
                            "{at}: no {auth}"
                        );
                        assert_eq!(meta.get("enableTLS").map(String::as_str), Some("true"));
                    }
                }
                if !o["spec"]["fallback"].is_null() {
                    assert!(
                        all_average,
                        "{at}: KEDA allows fallback only with AverageValue triggers"
                    );
                }
                let (min, max) = (
                    o["spec"]["minReplicaCount"].as_u64().unwrap_or(0),
                    o["spec"]["maxReplicaCount"].as_u64().unwrap_or(100),
                );
                assert!(min <= max, "{at}: minReplicaCount > maxReplicaCount");
            }
            "TriggerAuthentication" => {
                for r in o["spec"]["secretTargetRef"].as_array().unwrap() {
                    let p = r["parameter"].as_str().unwrap();
                    assert!(
                        ["caCert", "tlsClientCert", "tlsClientKey"].contains(&p),
                        "{at}: KEDA's external scaler reads no parameter {p}"
                    );
                }
            }
            "ServiceMonitor" => {
                let port = o["spec"]["endpoints"][0]["port"].as_str().unwrap();
                let hit = objects.iter().any(|s| {
                    kind(s) == "Service"
                        && labels_match(
                            &o["spec"]["selector"]["matchLabels"],
                            &s["metadata"]["labels"],
                        )
                        && s["spec"]["ports"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"] == port)
                        && o["spec"]["namespaceSelector"]["matchNames"]
                            .as_array()
                            .unwrap()
                            .contains(&s["metadata"]["namespace"])
                });
                assert!(
                    hit,
                    "{at}: selects no base Service with a port named {port}"
                );
            }
            _ => {}
        }
    }
    assert!(
        scaled >= 2,
        "expected a ScaledObject per model in deploy/examples/"
    );

    // The mutual-TLS overlay serves TLS from a mounted Secret and asks for client certificates.
    let mtls = kustomize(&deploy().join("examples/mtls")).unwrap_or_else(|e| panic!("{e}"));
    let d = redbridge_deployment(&mtls.objects);
    let c = container(d, "redbridge");
    let a = args(c);
    for f in ["--tls-cert", "--tls-key", "--tls-client-ca"] {
        let path = flag(&a, f).unwrap_or_else(|| panic!("mtls: no {f}"));
        let (vol, _) = mounted(pod_spec(d).unwrap(), c, &path)
            .unwrap_or_else(|| panic!("mtls: {f} {path} is on no volume"));
        assert!(
            vol["secret"]["secretName"].is_string(),
            "mtls: {f} must come from a Secret"
        );
    }
}

#[test]
fn the_dockerfile_text_declares_a_minimal_non_root_multi_stage_build() {
    let text = read(&repo().join("Dockerfile"));
    let ignore = read(&repo().join(".dockerignore"));
    // Instructions, with continuation lines joined and comments dropped.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    let final_from = froms.last().unwrap();
    assert!(
        final_from.contains("distroless") || final_from.contains("scratch"),
        "the final stage should be a minimal base: {final_from}"
    );
    let last_stage = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let user = lines[last_stage..]
        .iter()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "USER {user} is root");
    assert!(
        lines.iter().any(|l| l.contains("cargo build")
            && l.contains("--locked")
            && l.contains("--release")),
        "the build uses the lockfile and the release profile"
    );
    let entry = lines
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert!(entry.contains("redbridge"), "{entry}");

    // What the build copies exists and is not excluded by .dockerignore.
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .collect();
    let mut copied = Vec::new();
    for l in &lines {
        let Some(rest) = l.strip_prefix("COPY ") else {
            continue;
        };
        let parts: Vec<&str> = rest
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        if rest.contains("--from=") {
            continue;
        }
        for src in &parts[..parts.len() - 1] {
            let p = repo().join(src);
            assert!(p.exists(), "COPY {src}: no such file in the repository");
            let first = src.trim_start_matches("./").split('/').next().unwrap();
            assert!(
                !ignored.iter().any(|i| i.trim_matches('/') == first),
                "COPY {src}, but .dockerignore excludes it"
            );
            copied.push(first.to_string());
        }
    }
    // The build needs the workspace manifest, the lockfile, the proto and the crate.
    for needed in ["Cargo.toml", "Cargo.lock", "proto", "scaler"] {
        assert!(
            copied.iter().any(|c| c == needed),
            "the Dockerfile does not COPY {needed}"
        );
    }
    for heavy in ["target", ".git", ".venv"] {
        assert!(
            ignored.iter().any(|i| i.trim_matches('/') == heavy),
            ".dockerignore should exclude {heavy}"
        );
    }
}

#[test]
fn the_signal_reference_matches_the_code() {
    let doc = read(&repo().join("docs/signals.md"));
    let recommended = recommended_metric_types();
    let documented: BTreeSet<&str> = recommended.keys().map(String::as_str).collect();
    let names: BTreeSet<&str> = Signal::names().collect();
    assert_eq!(
        documented, names,
        "docs/signals.md's signals vs the signal table"
    );
    for (s, t) in &recommended {
        assert!(
            t == "AverageValue" || t == "Value",
            "docs/signals.md: {s} has no recommended metricType"
        );
    }

    // Which profiles provide each signal.
    let text_rows = markdown_table(&doc, "Signal", "envoy");
    let header_line = doc
        .lines()
        .find(|l| l.trim_start().starts_with("| Signal | envoy"))
        .unwrap();
    let header: Vec<String> = header_line
        .trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().trim_matches('`').to_string())
        .collect();
    let profiles: BTreeSet<&str> = header[1..].iter().map(String::as_str).collect();
    assert_eq!(
        profiles,
        profiles::names().collect(),
        "profile columns vs the built-in profiles"
    );
    let mut seen = BTreeSet::new();
    for row in text_rows {
        let signal_name = row[0].trim_matches('`').to_string();
        let signal = Signal::parse(&signal_name, None)
            .unwrap_or_else(|| panic!("docs/signals.md: unknown signal {signal_name}"));
        for (profile, cell) in header[1..].iter().zip(&row[1..]) {
            let provides = profiles::builtin(profile).unwrap().supports(signal);
            let says = !cell.is_empty() && cell != "–" && cell != "-";
            assert_eq!(
                says,
                provides,
                "docs/signals.md says {profile} {} {signal_name}",
                if says { "provides" } else { "lacks" }
            );
        }
        seen.insert(signal_name);
    }
    assert_eq!(
        seen.len(),
        Signal::names().count(),
        "every signal has a row of profiles"
    );
}
