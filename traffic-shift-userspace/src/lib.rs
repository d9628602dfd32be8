//! traffic-shift: Istio traffic shifting decided in the kernel.
//!
//! The flow, one module per stage: [`config`] (YAML -> validated
//! [`model`]) -> [`compile`] (model -> kernel map entries) -> [`datapath`]
//! (aya: load, attach, pin, write maps); [`agent`] keeps the kernel in step
//! with a rules directory and the resources [`applied`] over its [`admin`]
//! socket; [`cli`] holds the commands that need no agent, [`ctl`] those
//! that talk to it.

pub mod admin;
pub mod agent;
pub mod applied;
pub mod cli;
pub mod compile;
pub mod config;
pub mod ctl;
pub mod datapath;
pub mod drain;
pub mod fuzzing;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod pins;
pub mod proxy;
pub mod sockets;
pub mod stats;
pub mod status;
