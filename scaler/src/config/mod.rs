//! Raw input to the pool model ([`crate::model`]): the YAML file ([`file`]) and, for the signal
//! being asked for, the trigger metadata KEDA forwards ([`trigger`]). Each refuses bad input with
//! an error naming the key or field. The ZonalScaledObject's plan is in [`crate::k8s::plan`].

pub mod file;
pub mod trigger;
