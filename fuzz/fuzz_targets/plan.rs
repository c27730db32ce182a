//! A ZonalScaledObject (or its spec) as YAML or JSON, to the pool plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redbridge::k8s::crd::{ZonalScaledObject, ZonalScaledObjectSpec};
use redbridge::k8s::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let spec = serde_yaml::from_slice::<ZonalScaledObject>(data)
        .map(|o| o.spec)
        .or_else(|_| serde_yaml::from_slice::<ZonalScaledObjectSpec>(data));
    if let Ok(spec) = spec {
        let _ = Plan::from_spec(&spec);
    }
});
