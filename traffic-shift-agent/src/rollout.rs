//! Rollouts: the controller that drives a `Rollout`'s target route from
//! its stable subset to its canary subset, step by step, gated on
//! metrics, and rolls back at once when the canary fails.
//!
//! - [`state`]: a rollout's persisted state ([`RolloutState`]: phase,
//!   step, the canary weight in force, the analysis tallies and history),
//!   saved in the state directory on every change, so an agent killed
//!   mid-rollout resumes at the same step;
//! - [`analysis`]: one interval's metrics against their thresholds
//!   (successful, failed or inconclusive: never a pass without data);
//! - [`controller`]: the state machine ([`Controller`]): steps, pauses,
//!   analyses, hand edits, the operator's commands; it changes weights
//!   only through [`Controller::overlay`], which the agent applies to every
//!   model it puts in force;
//! - [`prometheus`]: the `prometheus` metric's instant query;
//! - [`view`]: what `rollout status` and `get rollouts` show.
//!
//! The agent's side (the loop's timer, the kernel's and the proxy's
//! counters, the admin requests) is in `agent/rollouts.rs`.

pub mod analysis;
pub mod controller;
pub mod ctl;
pub mod prometheus;
pub mod state;
pub mod view;

pub use self::{
    analysis::{Observation, Outcome},
    controller::{Command, Controller, Effects},
    state::{Phase, RolloutState},
    view::RolloutStatus,
};

#[cfg(test)]
pub(crate) mod tests;
