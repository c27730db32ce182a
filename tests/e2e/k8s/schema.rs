//! A structural OpenAPI v3 schema check, as the Kubernetes API server applies a CRD's
//! `openAPIV3Schema` to an object: types, required fields, enums, bounds, patterns, int-or-string,
//! list-map keys, and unknown fields (refused, as server-side apply does). CEL rules are checked
//! separately with kube-cel ([`cel`]).
#![allow(dead_code)] // each test binary uses a different part

use serde_json::Value;

/// The `openAPIV3Schema` of the first version of a CRD given as YAML (`---` documents allowed).
pub fn crd_schema(yaml: &str) -> Value {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let crd: Value = serde::Deserialize::deserialize(doc).expect("CRD YAML parses");
        if crd["kind"] == "CustomResourceDefinition" {
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("no CustomResourceDefinition in the YAML");
}

/// KEDA's ScaledObject schema, from the fixture the project keeps.
pub fn keda_scaledobject_schema() -> Value {
    crd_schema(&redbridge_fixtures::read("keda/keda.sh_scaledobjects.yaml"))
}

/// The schema of `version` of the CRD in `../shared/fixtures/crds/<file>` (Gateway API, Envoy
/// Gateway, Istio, as their projects publish them).
pub fn crd_fixture(file: &str, version: &str) -> Value {
    let path = format!(
        "{}/../../shared/fixtures/crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(doc).expect("CRD YAML parses");
        if crd["kind"] != "CustomResourceDefinition" {
            continue;
        }
        let versions = crd["spec"]["versions"].as_array().expect("versions");
        if let Some(v) = versions.iter().find(|v| v["name"] == version) {
            return v["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("{path} has no version {version}");
}

/// Every structural problem of `value` against `schema`, each with its path.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    errors
}

/// Structural problems and CEL rule failures together.
pub fn validate_all(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = validate(schema, value);
    errors.extend(cel(schema, value));
    errors
}

/// Failures of the schema's `x-kubernetes-validations` rules (evaluated by kube-cel).
pub fn cel(schema: &Value, value: &Value) -> Vec<String> {
    match kube_cel::Validator::new().validate(schema, value, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .as_slice()
            .iter()
            .map(|e| format!("{}: {} ({})", e.field_path, e.message, e.rule))
            .collect(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!(
                "{at}: must be an integer or a string, got {}",
                type_name(value)
            ));
            return;
        }
        if let Some(alternatives) = schema["anyOf"].as_array() {
            let fits = alternatives.iter().any(|alt| {
                let mut e = Vec::new();
                check_type_only(alt, value, at, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: matches none of anyOf"));
            }
        }
        if let (Some(p), Some(s)) = (schema["pattern"].as_str(), value.as_str()) {
            check_pattern(p, s, at, errors);
        }
        return;
    }
    if let Some(ty) = schema["type"].as_str() {
        let actual = type_name(value);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            errors.push(format!("{at}: must be {ty}, got {actual}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!(
                "{at}: {value} is not one of {}",
                Value::Array(allowed.clone())
            ));
        }
    }
    match value {
        Value::Object(map) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = req.as_str() {
                    if !map.contains_key(name) {
                        errors.push(format!("{at}: required field {name} is missing"));
                    }
                }
            }
            let props = schema["properties"].as_object();
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            for (k, v) in map {
                let child = format!("{path}.{k}");
                let child = child.trim_start_matches('.');
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    check(p, v, child, errors);
                } else if let Some(extra) = schema.get("additionalProperties") {
                    match extra {
                        Value::Bool(true) => {}
                        Value::Bool(false) => errors.push(format!("{child}: unknown field")),
                        s => check(s, v, child, errors),
                    }
                } else if path.is_empty()
                    && ["apiVersion", "kind", "metadata"].contains(&k.as_str())
                {
                    // Every object has these; CRD schemas need not list them.
                } else if props.is_some() && !preserve {
                    errors.push(format!("{child}: unknown field"));
                }
                // An object schema without properties (`metadata: {type: object}`) takes anything:
                // the API server validates ObjectMeta itself.
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    errors.push(format!("{at}: needs at least {min} items"));
                }
            }
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    errors.push(format!("{at}: at most {max} items"));
                }
            }
            if schema["x-kubernetes-list-type"] == "map" {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut seen = Vec::new();
                for item in items {
                    let k: Vec<&Value> = keys.iter().map(|key| &item[*key]).collect();
                    if seen.contains(&k) {
                        errors.push(format!("{at}: duplicate entry for keys {keys:?}"));
                    }
                    seen.push(k);
                }
            }
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::String(s) => {
            if let Some(min) = schema["minLength"].as_u64() {
                if (s.chars().count() as u64) < min {
                    errors.push(format!("{at}: shorter than {min}"));
                }
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                if s.chars().count() as u64 > max {
                    errors.push(format!("{at}: longer than {max}"));
                }
            }
            if let Some(p) = schema["pattern"].as_str() {
                check_pattern(p, s, at, errors);
            }
            if schema["format"] == "date-time" && s.parse::<k8s_openapi::jiff::Timestamp>().is_err()
            {
                errors.push(format!("{at}: not a date-time"));
            }
        }
        Value::Number(n) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema["minimum"].as_f64() {
                if v < min {
                    errors.push(format!("{at}: {v} is below the minimum {min}"));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                if v > max {
                    errors.push(format!("{at}: {v} is above the maximum {max}"));
                }
            }
            if schema["format"] == "int32"
                && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v)
            {
                errors.push(format!("{at}: {v} does not fit int32"));
            }
        }
        _ => {}
    }
}

fn check_type_only(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(ty) = schema["type"].as_str() {
        if type_name(value) != ty {
            errors.push(format!("{at}: must be {ty}"));
        }
    }
}

fn check_pattern(pattern: &str, s: &str, at: &str, errors: &mut Vec<String>) {
    match regex::Regex::new(pattern) {
        Ok(re) if re.is_match(s) => {}
        Ok(_) => errors.push(format!("{at}: {s:?} does not match {pattern}")),
        Err(e) => errors.push(format!(
            "{at}: schema pattern {pattern} does not compile: {e}"
        )),
    }
}

#[cfg(test)]
mod self_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_refuses_what_the_api_refuses() {
        let schema = json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "n": {"type": "integer", "minimum": 1, "format": "int32"},
                "kind": {"type": "string", "enum": ["A", "B"]},
                "port": {"x-kubernetes-int-or-string": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                          "items": {"type": "object", "properties": {"k": {"type": "string"}}}}
            }
        });
        assert!(validate(
            &schema,
            &json!({"name": "x", "n": 2, "kind": "A", "port": "http", "labels": {"a": "b"}})
        )
        .is_empty());
        let bad = validate(
            &schema,
            &json!({"n": 0, "kind": "C", "port": 1.5, "labels": {"a": 1}, "extra": true,
                    "items": [{"k": "a"}, {"k": "a"}]}),
        );
        for want in [
            "required field name is missing",
            "n: 0 is below the minimum 1",
            "kind: \"C\" is not one of",
            "port: must be an integer or a string",
            "labels.a: must be string",
            "extra: unknown field",
            "items: duplicate entry",
        ] {
            assert!(
                bad.iter().any(|e| e.contains(want)),
                "{want} not in {bad:?}"
            );
        }
    }
}
