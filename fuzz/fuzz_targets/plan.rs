//! A ZonalScaledObject (or its spec) as YAML or JSON, to the pool plan; an accepted plan is then
//! carried as far as the controller would: the pool with endpoints in every zone, the state built
//! from it, and one KEDA ScaledObject per zone.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use redbridge::k8s::crd::{ZonalScaledObject, ZonalScaledObjectSpec};
use redbridge::k8s::plan::{Endpoint, Plan, GATEWAY, MODEL_SERVER};
use redbridge::k8s::scaledobject::{desired, TriggerSettings};
use redbridge::model::{Clock, Config};
use redbridge::state::State;

fuzz_target!(|data: &[u8]| {
    let zso = serde_yaml::from_slice::<ZonalScaledObject>(data).or_else(|_| {
        serde_yaml::from_slice::<ZonalScaledObjectSpec>(data)
            .map(|spec| ZonalScaledObject::new("fuzz", spec))
    });
    let Ok(mut zso) = zso else {
        return;
    };
    let Ok(plan) = Plan::from_spec(&zso.spec) else {
        return;
    };
    assert!(!plan.zones.is_empty(), "an accepted plan has a zone");
    assert!(
        plan.interval.saturating_mul(2) <= plan.window,
        "an accepted plan holds two scrapes per window"
    );
    let endpoints: Vec<Endpoint> = plan
        .zones
        .iter()
        .enumerate()
        .flat_map(|(i, z)| {
            let address = IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i % 250) as u8));
            [GATEWAY, MODEL_SERVER].map(|source| Endpoint {
                source,
                address,
                port: 9000,
                zone: z.name.clone(),
                ready: true,
                serving: true,
                terminating: false,
                pod: None,
                node: None,
            })
        })
        .collect();
    let pool = plan.pool("fuzz", "ml", &endpoints);
    let config = Config {
        pools: vec![std::sync::Arc::new(pool)],
    };
    let _ = State::new(&config, Clock::default());
    zso.metadata.namespace.get_or_insert_with(|| "ml".into());
    zso.metadata.name.get_or_insert_with(|| "fuzz".into());
    let settings = TriggerSettings {
        scaler_address: "redbridge.redbridge.svc:9090".into(),
        cluster_trigger_authentication: None,
    };
    let _ = desired(&zso, &plan, &settings);
});
