//! Rollouts in a fleet (`--store`): one agent drives every rollout, every
//! agent puts the driver's weights in force.
//!
//! Keys and guards are the store's (`traffic_shift_store`'s `rollouts`
//! module). Two tasks (`tasks`) talk to etcd, so the agent loop never
//! waits on it:
//! - [`follow`] (every node) lists `PREFIX/rollouts/` and watches it,
//!   resuming where it stopped as the rules follower does; every node lays
//!   the states it sees over its model ([`overlay_states`]), and reports
//!   the weights it has in force in its node status;
//! - [`drive`] (every node) campaigns for the leader key under a lease of
//!   [`LEADER_TTL`](traffic_shift_store::LEADER_TTL) once this node has the store's rules in force; the
//!   winner reads the states the last driver wrote and drives from there
//!   (`Elected`), renews its lease every third of the TTL, follows every
//!   node's status (for the convergence gate and the summed counters), and
//!   writes the states the controller changes, each guarded by the leader
//!   key and the state's mod revision. A driver that cannot renew its lease
//!   for the TTL (less a second) stops driving (`Deposed`); etcd deletes its
//!   key when the lease expires, and another node's campaign wins.
//!
//! In `counters`: the canary's counters summed over the nodes' reports
//! ([`FleetCounters`]), which the driver's analyses measure.
//!
//! The driver never puts its own weights in force directly: like every
//! node, it puts in force the states it reads back from the store, so a
//! state is in etcd before any node steers by it.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use traffic_shift_config::{model::RoutingModel, rollout::Rollout};
use traffic_shift_store::{NodeStatus, RolloutsView, Store, StoreError};

mod counters;
mod tasks;

pub use self::counters::FleetCounters;
use self::tasks::{Driver, drive, follow};
use crate::rollout::{Command, Observation, RolloutState, controller::overlay_states};

/// Backoff between attempts to reach etcd.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one write or renewal may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A driver stops driving this long before its lease may have expired.
const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// How long an operator's command waits for the driver to apply it.
pub const COMMAND_WAIT: Duration = Duration::from_secs(8);

/// The nodes' statuses, as the driver follows them.
pub type Nodes = Arc<BTreeMap<String, NodeStatus>>;

/// What the tasks tell the agent loop.
#[derive(Debug)]
pub enum RolloutsEvent {
    /// What is under `PREFIX/rollouts/` now.
    View(RolloutsView),
    /// The follower lost etcd (the states in force stay).
    Disconnected(String),
    /// This node drives from now on (`epoch`), from these states.
    Elected { epoch: u64, view: RolloutsView },
    /// This node no longer drives.
    Deposed { epoch: u64, reason: String },
    /// A command this node wrote for the driver, or why it was not written.
    CommandWritten {
        id: String,
        result: Result<(), String>,
    },
    /// While driving: the nodes' statuses changed.
    Nodes(Nodes),
}

/// A state the driver writes (or deletes: `state: None`), consuming the
/// command of that mod revision if given.
#[derive(Debug)]
pub struct DriverRequest {
    pub epoch: u64,
    pub name: String,
    pub state: Option<String>,
    pub consume: Option<i64>,
}

/// An operator's command, as written under `PREFIX/rollouts/commands/`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StoredCommand {
    pub id: String,
    pub command: Command,
    /// The node whose agent wrote it.
    pub from: String,
    pub at_ms: u64,
}

/// A command this node wrote, waiting for the driver's state to show it.
pub struct Waiting {
    pub id: String,
    pub name: String,
    pub command: Command,
    pub call: crate::admin::Call,
    pub deadline: Instant,
}

/// The agent's side of the fleet's rollouts.
pub struct FleetRollouts {
    pub node: String,
    pub store: Store,
    /// For the tasks this side spawns (a command's write).
    pub events: mpsc::Sender<RolloutsEvent>,
    /// The revision of the last view laid over the model.
    pub revision: i64,
    requests: mpsc::UnboundedSender<DriverRequest>,
    /// The leader lease while this node drives: revoked when the agent
    /// stops ([`FleetRollouts::resign`]), so another node takes over at
    /// once rather than when the lease expires.
    held: Arc<std::sync::Mutex<Option<i64>>>,
    /// Tells [`drive`] that this node has the store's rules in force (it
    /// campaigns only then: a driver without the rules would forget every
    /// rollout).
    pub ready: watch::Sender<bool>,
    /// While this node drives: the election's epoch.
    pub epoch: Option<u64>,
    /// The driver, as the store says.
    pub leader: Option<String>,
    /// The states under `PREFIX/rollouts/state/`, parsed: what every node
    /// puts in force.
    pub states: BTreeMap<String, RolloutState>,
    /// The commands under `PREFIX/rollouts/commands/`.
    pub commands: BTreeMap<String, (String, i64)>,
    /// While driving: what was last sent to the store for each rollout.
    pub sent: BTreeMap<String, RolloutState>,
    /// While driving: commands applied, waiting to be seen consumed (their
    /// mod revision).
    pub consuming: BTreeMap<String, i64>,
    /// While driving: every live node's status.
    pub nodes: Nodes,
    /// The fleet's canary counters, accumulated node by node.
    pub counters: FleetCounters,
    /// Commands this node wrote, waiting for the driver.
    pub waiting: Vec<Waiting>,
    /// The model as last resolved from the rules (before the overlay), if
    /// it has rollouts: the states are laid over it again when they change.
    pub written: Option<RoutingModel>,
    /// The canary weights the overlay last put in force (by rollout;
    /// `None`: the rules' own weights).
    pub overlaid: BTreeMap<String, Option<u32>>,
}

/// The loop's ends of the tasks.
pub struct RolloutsIo {
    pub events: mpsc::Receiver<RolloutsEvent>,
    pub nodes: watch::Receiver<Nodes>,
}

/// Starts the follower and the driver tasks for `node`.
pub fn start(store: Store, node: &str) -> (FleetRollouts, RolloutsIo) {
    let (events, events_rx) = mpsc::channel(64);
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let (nodes, nodes_rx) = watch::channel(Nodes::default());
    let (ready, ready_rx) = watch::channel(false);
    let held = Arc::new(std::sync::Mutex::new(None));
    tokio::spawn(follow(store.clone(), events.clone()));
    tokio::spawn(drive(
        Driver {
            store: store.clone(),
            node: node.to_owned(),
            held: Arc::clone(&held),
        },
        ready_rx,
        requests_rx,
        events.clone(),
        nodes,
    ));
    (
        FleetRollouts {
            node: node.to_owned(),
            store,
            events,
            revision: 0,
            requests,
            held,
            ready,
            epoch: None,
            leader: None,
            states: BTreeMap::new(),
            commands: BTreeMap::new(),
            sent: BTreeMap::new(),
            consuming: BTreeMap::new(),
            nodes: Nodes::default(),
            counters: FleetCounters::default(),
            waiting: Vec::new(),
            written: None,
            overlaid: BTreeMap::new(),
        },
        RolloutsIo {
            events: events_rx,
            nodes: nodes_rx,
        },
    )
}

impl FleetRollouts {
    /// The agent stops: if this node drives, it gives the leader key up
    /// (its lease revoked; at most a second spent on it), so a node left
    /// takes over now. Its states stay in the store: the next driver goes
    /// on from them.
    pub async fn resign(&self) {
        let lease = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(lease) = lease {
            let revoked =
                tokio::time::timeout(Duration::from_secs(1), self.store.revoke_lease(lease)).await;
            if revoked.is_ok() {
                tracing::info!(
                    "stopping: gave the rollouts' leader key up; another node drives now"
                );
            }
        }
    }

    /// Sends the states of `states` that differ from what was last sent
    /// (and deletes those gone), `consume` attached to its rollout's write.
    pub fn send_writes(
        &mut self,
        states: &BTreeMap<String, RolloutState>,
        consume: Option<(&str, i64)>,
    ) {
        let Some(epoch) = self.epoch else { return };
        let mut names: Vec<String> = states
            .iter()
            .filter(|(name, state)| self.sent.get(*name) != Some(state))
            .map(|(name, _)| name.clone())
            .collect();
        let gone: Vec<String> = self
            .sent
            .keys()
            .filter(|n| !states.contains_key(*n))
            .cloned()
            .collect();
        if let Some((name, _)) = consume
            && !names.iter().any(|n| n == name)
            && states.contains_key(name)
        {
            names.push(name.to_owned());
        }
        for name in names {
            let state = &states[&name];
            let text = serde_json::to_string(state).expect("a rollout state serializes");
            self.sent.insert(name.clone(), state.clone());
            let _ = self.requests.send(DriverRequest {
                epoch,
                consume: consume.filter(|(n, _)| *n == name).map(|(_, r)| r),
                name,
                state: Some(text),
            });
        }
        for name in gone {
            self.sent.remove(&name);
            let _ = self.requests.send(DriverRequest {
                epoch,
                name,
                state: None,
                consume: None,
            });
        }
    }

    /// Every live node with the canary weights it reports in force (the
    /// controller's gate).
    pub fn nodes_in_force(&self) -> Vec<(String, BTreeMap<String, u32>)> {
        self.nodes
            .values()
            .map(|n| (n.node.clone(), n.rollouts.clone()))
            .collect()
    }

    /// The canary's counters summed over every live node, as their
    /// statuses report them (at most once a second): see [`FleetCounters`].
    pub fn observe(&mut self, rollout: &Rollout) -> Observation {
        let nodes = Arc::clone(&self.nodes);
        self.counters.observe(rollout, &nodes)
    }
}

/// The canary weight each rollout of `model` gets from `states` (`None`:
/// the rules' own weights: no state, another spec, or a hand edit).
fn overlaid_weights(
    states: &BTreeMap<String, RolloutState>,
    model: &RoutingModel,
) -> BTreeMap<String, Option<u32>> {
    model
        .rollouts
        .iter()
        .map(|rollout| {
            let weight = states
                .get(&rollout.name)
                .filter(|s| {
                    s.spec_digest == rollout.spec_digest
                        && s.pause_cause != Some(crate::rollout::state::PauseCause::HandEdit)
                })
                .map(|s| s.canary_weight);
            (rollout.name.clone(), weight)
        })
        .collect()
}

impl super::Agent {
    /// Whether this node runs the rollouts' controller: on one node always,
    /// in a fleet while it drives.
    pub(super) fn drives(&self) -> bool {
        self.fleet_rollouts
            .as_ref()
            .is_none_or(|f| f.epoch.is_some())
    }

    /// The states in force: the store's in a fleet, else the controller's.
    pub(super) fn rollout_states(&self) -> &BTreeMap<String, RolloutState> {
        match &self.fleet_rollouts {
            Some(fleet) => &fleet.states,
            None => self.rollouts.controller.states(),
        }
    }

    /// In a fleet: the canary weight each rollout has in force on this
    /// node, for its status.
    pub(super) fn rollouts_in_force(&self) -> BTreeMap<String, u32> {
        let Some(fleet) = &self.fleet_rollouts else {
            return BTreeMap::new();
        };
        self.model
            .rollouts
            .iter()
            .filter_map(|rollout| {
                // A node that does not serve the route (a Gateway for other
                // nodes) has the state's weight as much as it can.
                let weight = self
                    .model
                    .written_canary_weight(rollout)
                    .or_else(|| fleet.overlaid.get(&rollout.name).copied().flatten())?;
                Some((rollout.name.clone(), weight))
            })
            .collect()
    }

    /// [`Agent::install`] in a fleet: the driver's controller follows the
    /// rules; every node puts them in force with the store's states laid
    /// over them.
    pub(super) fn install_in_fleet(
        &mut self,
        mut model: RoutingModel,
        what: &str,
    ) -> Result<(), super::InstallError> {
        let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
        fleet.written = (!model.rollouts.is_empty()).then(|| model.clone());
        let mut effects = None;
        if fleet.epoch.is_some() {
            let now = crate::cli::now_ms();
            let mut e = self.rollouts.controller.sync(&model, now);
            e.merge(
                self.rollouts
                    .controller
                    .tick(&model, now, &mut |r| fleet.observe(r)),
            );
            if e.changed {
                fleet.send_writes(self.rollouts.controller.states(), None);
            }
            effects = Some(e);
        }
        overlay_states(&fleet.states, &mut model);
        let weights = overlaid_weights(&fleet.states, &model);
        self.put_in_force(model, what)?;
        if let Some(fleet) = &mut self.fleet_rollouts {
            fleet.overlaid = weights;
        }
        self.publish_node_status();
        if let Some(effects) = effects {
            self.rollout_effects(effects);
        }
        Ok(())
    }

    /// An event of the fleet's rollouts' tasks.
    pub(super) fn fleet_rollouts_event(&mut self, event: RolloutsEvent) {
        let Some(fleet) = &mut self.fleet_rollouts else {
            return;
        };
        match event {
            RolloutsEvent::View(view) => self.fleet_view(view),
            RolloutsEvent::Disconnected(error) => {
                tracing::debug!(%error, "the rollouts' watch on the store broke; the weights in force stay");
            }
            RolloutsEvent::Elected { epoch, view } => {
                let states = parse_states(&view);
                tracing::info!(
                    epoch,
                    rollouts = states.len(),
                    "driving the rollouts from the states in the store"
                );
                let mut controller =
                    crate::rollout::Controller::new(crate::rollout::state::States {
                        path: None,
                        states: states.clone(),
                    });
                controller.set_nodes_in_force(Some(fleet.nodes_in_force()));
                self.rollouts.controller = controller;
                fleet.epoch = Some(epoch);
                fleet.sent = states;
                fleet.consuming.clear();
                fleet.counters = FleetCounters::default();
                let written = fleet.written.clone();
                self.fleet_view(view);
                // The rules as this node has them now (new rollouts,
                // rollouts gone, hand edits), then what is due.
                let model = written.unwrap_or_else(|| (*self.model).clone());
                let now = crate::cli::now_ms();
                let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
                let mut effects = self.rollouts.controller.sync(&model, now);
                effects.merge(
                    self.rollouts
                        .controller
                        .tick(&model, now, &mut |r| fleet.observe(r)),
                );
                effects.changed = true;
                self.rollout_changed(effects, "rollout step");
            }
            RolloutsEvent::Deposed { epoch, reason } => {
                if fleet.epoch == Some(epoch) {
                    tracing::warn!(%reason, "no longer driving the rollouts; following the store's states");
                    fleet.epoch = None;
                    fleet.sent.clear();
                    fleet.consuming.clear();
                    self.rollouts.controller = crate::rollout::Controller::default();
                }
            }
            RolloutsEvent::CommandWritten { id, result } => {
                if let Err(error) = result
                    && let Some(i) = fleet.waiting.iter().position(|w| w.id == id)
                {
                    let waiting = fleet.waiting.remove(i);
                    waiting.call.reply(crate::admin::Response::Refused {
                        errors: vec![format!(
                            "rollout {}: cannot write the command `{}` to the store: {error}; nothing changed",
                            waiting.name,
                            waiting.command.as_str()
                        )],
                    });
                }
            }
            RolloutsEvent::Nodes(nodes) => {
                fleet.nodes = nodes;
                if fleet.epoch.is_some() {
                    let in_force = fleet.nodes_in_force();
                    self.rollouts.controller.set_nodes_in_force(Some(in_force));
                    self.rollout_tick();
                }
            }
        }
    }

    /// What the store has under `PREFIX/rollouts/` now: the states laid
    /// over the rules (the weights put in force if they changed), the
    /// driver's commands applied, the operators answered.
    fn fleet_view(&mut self, view: RolloutsView) {
        let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
        if view.revision < fleet.revision {
            return;
        }
        fleet.revision = view.revision;
        if fleet.leader != view.leader {
            tracing::info!(
                driver = view.leader.as_deref().unwrap_or("none"),
                "the rollouts' driver"
            );
        }
        fleet.states = parse_states(&view);
        fleet.leader = view.leader;
        fleet.commands = view.commands;
        let commands = fleet.commands.clone();
        fleet
            .consuming
            .retain(|name, revision| commands.get(name).is_some_and(|c| c.1 == *revision));
        if fleet.epoch.is_some() {
            for (name, (text, revision)) in commands {
                let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
                if fleet.consuming.get(&name) == Some(&revision) {
                    continue;
                }
                fleet.consuming.insert(name.clone(), revision);
                self.apply_stored_command(&name, &text, revision);
            }
        }
        self.fleet_overlay("rollout state from the store");
        self.answer_waiting();
        self.rollout_effects(crate::rollout::Effects::default());
        self.publish_node_status();
    }

    /// The driver applies a command from the store, records it in the
    /// rollout's state, and writes the state, consuming the command.
    fn apply_stored_command(&mut self, name: &str, text: &str, revision: i64) {
        let command: StoredCommand = match serde_json::from_str(text) {
            Ok(command) => command,
            Err(err) => {
                tracing::warn!(rollout = %name, %err, "not a rollout command in the store; ignored (remove it with etcdctl)");
                return;
            }
        };
        let model = &self.model;
        let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
        let now = crate::cli::now_ms();
        let result =
            self.rollouts
                .controller
                .command(model, name, command.command, now, &mut |r| fleet.observe(r));
        let (effects, error) = match result {
            Ok(effects) => (effects, None),
            Err(error) => (crate::rollout::Effects::default(), Some(error)),
        };
        tracing::info!(rollout = %name, command = command.command.as_str(), from = %command.from, error = error.as_deref().unwrap_or(""), "rollout command from the store");
        let recorded = self.rollouts.controller.record_command(
            name,
            crate::rollout::state::AppliedCommand {
                id: command.id,
                command: command.command,
                error,
            },
        );
        if !recorded {
            tracing::warn!(rollout = %name, "a command for a rollout without a state; it stays in the store");
            return;
        }
        let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
        fleet.send_writes(self.rollouts.controller.states(), Some((name, revision)));
        self.rollout_effects(effects);
    }

    /// Lays the store's states over the rules as resolved, and puts that
    /// in force if a weight changed.
    fn fleet_overlay(&mut self, what: &str) {
        let fleet = self.fleet_rollouts.as_ref().expect("in a fleet");
        let Some(mut model) = fleet.written.clone() else {
            return;
        };
        let weights = overlaid_weights(&fleet.states, &model);
        if weights == fleet.overlaid {
            return;
        }
        overlay_states(&fleet.states, &mut model);
        match self.put_in_force(model, what) {
            Ok(()) => {
                if let Some(fleet) = &mut self.fleet_rollouts {
                    fleet.overlaid = weights;
                }
            }
            Err(err) => {
                tracing::error!(%err, "cannot put the rollouts' weights from the store in force; the weights before stay");
            }
        }
    }

    /// Answers the operators whose command the driver's state shows.
    fn answer_waiting(&mut self) {
        let fleet = self.fleet_rollouts.as_mut().expect("in a fleet");
        let mut answered = Vec::new();
        let mut i = 0;
        while i < fleet.waiting.len() {
            let waiting = &fleet.waiting[i];
            let done = fleet
                .states
                .get(&waiting.name)
                .and_then(|s| s.last_command.as_ref())
                .filter(|c| c.id == waiting.id)
                .map(|c| c.error.clone());
            match done {
                Some(error) => answered.push((fleet.waiting.remove(i), error)),
                None => i += 1,
            }
        }
        for (waiting, error) in answered {
            let response = match error {
                Some(error) => crate::admin::Response::Refused {
                    errors: vec![error],
                },
                None => self.rollout_statuses(Some(&waiting.name)),
            };
            waiting.call.reply(response);
        }
    }

    /// Commands the driver did not apply in time: said so.
    pub(super) fn expire_waiting_commands(&mut self) {
        let Some(fleet) = &mut self.fleet_rollouts else {
            return;
        };
        let now = Instant::now();
        let (expired, waiting): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut fleet.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        fleet.waiting = waiting;
        for w in expired {
            let driver = fleet.leader.as_deref().map_or_else(
                || "no node drives the rollouts right now".to_owned(),
                |l| format!("the driving node {l} did not apply it"),
            );
            w.call.reply(crate::admin::Response::Refused {
                errors: vec![format!(
                    "rollout {}: `{}` was written to the store, but {driver} within {} s; it stays there and is applied when a driver reads it (`traffic-shift rollout status {}` shows the outcome)",
                    w.name,
                    w.command.as_str(),
                    COMMAND_WAIT.as_secs(),
                    w.name
                )],
            });
        }
    }

    /// In a fleet, a rollout's command: checked against the store's state,
    /// written to the store for the driver, answered once the driver's
    /// state shows it (or after [`COMMAND_WAIT`]). Gives the call back
    /// when it is not that.
    pub(super) fn fleet_rollout_command(
        &mut self,
        call: crate::admin::Call,
    ) -> Option<crate::admin::Call> {
        let crate::admin::Request::Rollout { name, action } = &call.request else {
            return Some(call);
        };
        if self.fleet_rollouts.is_none() {
            return Some(call);
        }
        let (name, action) = (name.clone(), *action);
        let refuse = |call: crate::admin::Call, error: String| {
            tracing::warn!(command = action.as_str(), "admin request refused: {error}");
            call.reply(crate::admin::Response::Refused {
                errors: vec![error],
            });
        };
        let full = match self.find_rollout(&name) {
            Ok(full) => full,
            Err(error) => {
                refuse(call, error);
                return None;
            }
        };
        let fleet = self.fleet_rollouts.as_mut().expect("checked");
        // Refused at once if it does not apply to the state as the store has it.
        let mut scratch = crate::rollout::Controller::new(crate::rollout::state::States {
            path: None,
            states: fleet.states.clone(),
        });
        let now = crate::cli::now_ms();
        if let Err(error) = scratch.command(&self.model, &full, action, now, &mut |_| {
            Observation::default()
        }) {
            refuse(call, error);
            return None;
        }
        let id = format!(
            "{}-{}",
            fleet.node,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let stored = StoredCommand {
            id: id.clone(),
            command: action,
            from: fleet.node.clone(),
            at_ms: now,
        };
        let text = serde_json::to_string(&stored).expect("a command serializes");
        let (store, events, key) = (fleet.store.clone(), fleet.events.clone(), full.clone());
        let written = id.clone();
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(REQUEST_TIMEOUT * 2, store.put_rollout_command(&key, &text))
                    .await
                    .unwrap_or(Err(StoreError::Timeout(REQUEST_TIMEOUT * 2)))
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            let _ = events
                .send(RolloutsEvent::CommandWritten {
                    id: written,
                    result,
                })
                .await;
        });
        tracing::info!(rollout = %full, command = action.as_str(), driver = fleet.leader.as_deref().unwrap_or("none"), "rollout command written to the store for the driver");
        fleet.waiting.push(Waiting {
            id,
            name: full,
            command: action,
            call,
            deadline: Instant::now() + COMMAND_WAIT,
        });
        None
    }
}

/// The states of a view, parsed (one that is not a state is left out, and said).
fn parse_states(view: &RolloutsView) -> BTreeMap<String, RolloutState> {
    view.states
        .iter()
        .filter_map(|(name, (text, _))| match serde_json::from_str::<RolloutState>(text) {
            Ok(state) => Some((name.clone(), state)),
            Err(err) => {
                tracing::warn!(rollout = %name, %err, "not a rollout state in the store; left out (the driver writes it again)");
                None
            }
        })
        .collect()
}
