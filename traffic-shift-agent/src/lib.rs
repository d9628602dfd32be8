//! traffic-shift's node agent and CLI, on top of the stage crates:
//! `traffic_shift_config` (YAML -> validated model), `traffic_shift_datapath`
//! (model -> kernel tables; load, pin, adopt, reconcile) and
//! `traffic_shift_proxy` (the L7 proxy).
//!
//! [`agent`] keeps the kernel and the proxy in step with a rules directory
//! and the resources [`applied`] over its [`admin`] socket; [`health`]
//! probes endpoints, [`metrics`] exports Prometheus series, [`status`] is
//! the status file and its rendering; [`cli`] holds the commands that need
//! no agent, [`ctl`] those that talk to it; [`fleet`] the store's
//! resources (`--store`) as the agent and the CLI read and write them;
//! [`rollout`] the rollouts' controller (its agent side in `agent/rollouts.rs`).

pub mod admin;
pub mod agent;
pub mod applied;
pub mod cli;
pub mod ctl;
pub mod fleet;
pub mod fuzzing;
pub mod health;
pub mod metrics;
pub mod rollout;
pub mod status;
