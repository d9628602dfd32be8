//! Picking a destination and an endpoint for a request, with the kernel
//! path's own tables and rules (`traffic-shift-ebpf/src/select.rs`): the
//! slot table [`smooth_sequence`] builds, walked by a per-route
//! counter (smooth and deterministic), indexed at random (`RANDOM`), or
//! indexed by a hash into [`rendezvous_table`] (consistent hash).

use std::{
    cell::Cell,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use traffic_shift_common::{MAX_DESTS, addr_words, source_hash};

use traffic_shift_common::tables::{self, rendezvous_table, service_key, smooth_sequence};
use traffic_shift_config::model::{Destination, Endpoint, HttpRoute, HttpSelection};

/// Selection cursors of one route, kept by route key across updates (as
/// the kernel keeps `TS_CURSORS` apart from the route tables), so a weight
/// change keeps the position in the sequence.
#[derive(Debug)]
pub struct RouteState {
    next_slot: AtomicU64,
    /// Per destination index (modulo [`MAX_DESTS`]).
    next_endpoint: Box<[AtomicU64]>,
    /// The route's requests counted for its mirrors' shares ([`mirrored`]).
    mirror_turn: AtomicU64,
    /// Per destination index (modulo [`MAX_DESTS`]): its requests, counted
    /// for its own mirrors' shares (made when one is first counted: few
    /// destinations have mirrors of their own).
    destination_mirror_turn: OnceLock<Box<[AtomicU64]>>,
}

impl Default for RouteState {
    fn default() -> Self {
        Self {
            next_slot: AtomicU64::new(0),
            next_endpoint: (0..MAX_DESTS).map(|_| AtomicU64::new(0)).collect(),
            mirror_turn: AtomicU64::new(0),
            destination_mirror_turn: OnceLock::new(),
        }
    }
}

impl RouteState {
    /// This request's turn among the route's requests (from 0), for
    /// [`mirrored`].
    pub fn next_request(&self) -> u64 {
        self.mirror_turn.fetch_add(1, Ordering::Relaxed)
    }

    /// This request's turn among those sent to destination `index`, for
    /// its own mirrors' [`mirrored`].
    pub fn next_request_to(&self, index: usize) -> u64 {
        let turns = self
            .destination_mirror_turn
            .get_or_init(|| (0..MAX_DESTS).map(|_| AtomicU64::new(0)).collect());
        turns[index % MAX_DESTS].fetch_add(1, Ordering::Relaxed)
    }
}

/// Whether request `n` of a route (its [`RouteState::next_request`]) is
/// one of a mirror's `percentage` (0.0..=100.0, to a millionth): exactly
/// that share of every run of requests, evenly spread (request `n` is
/// mirrored when `(n + 1) * p` reaches the next whole number), as the
/// weighted picks are exact: 20% is 200 of every 1000 requests in a row.
pub fn mirrored(n: u64, percentage: f64) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    if percentage.is_nan() || percentage <= 0.0 {
        return false;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0 < percentage < 100: at most 100 000 000 millionths"
    )]
    let per_million = u128::from((percentage * 10_000.0).round() as u64);
    let n = u128::from(n);
    (n + 1) * per_million / 1_000_000 != n * per_million / 1_000_000
}

/// A route's slot table: destination index per slot.
#[derive(Debug)]
pub struct Slots {
    table: Vec<u8>,
}

impl Slots {
    pub fn build(route: &HttpRoute) -> Self {
        let destinations: Vec<&Destination> =
            route.destinations.iter().map(|d| &d.destination).collect();
        Self::weighted(&destinations, &route.selection)
    }

    /// The table of a route's weighted `destinations` (of an HTTP route, or
    /// of a TCP route served in user space), for `selection`.
    pub fn weighted(destinations: &[&Destination], selection: &HttpSelection) -> Self {
        if destinations.is_empty() {
            return Self { table: Vec::new() };
        }
        let weights: Vec<u32> = destinations.iter().map(|d| d.weight).collect();
        let table = match selection {
            HttpSelection::Smooth | HttpSelection::Random => smooth_sequence(&weights),
            HttpSelection::SourceIp
            | HttpSelection::Header(_)
            | HttpSelection::Cookie(_)
            | HttpSelection::QueryParameter(_) => {
                let ids: Vec<u64> = destinations
                    .iter()
                    .map(|d| tables::destination_id(&d.host, d.subset.as_deref()))
                    .collect();
                rendezvous_table(&weights, &ids)
            }
        };
        Self { table }
    }

    /// The destination index for one request: `hash` is the request's
    /// consistent-hash key when the route hashes (`None`: the key is absent
    /// from the request, so Envoy picks at random).
    pub fn pick(&self, selection: &HttpSelection, state: &RouteState, hash: Option<u32>) -> usize {
        let n = self.table.len();
        if n == 0 {
            return 0;
        }
        let slot = match (selection, hash) {
            (HttpSelection::Smooth, _) => {
                let next = state.next_slot.fetch_add(1, Ordering::Relaxed);
                usize::try_from(next % n as u64).unwrap_or(0)
            }
            (_, Some(hash)) => hash as usize % n,
            (_, None) => random_u32() as usize % n,
        };
        usize::from(self.table[slot])
    }
}

/// An endpoint of destination `index` of a route, chosen as the kernel
/// does: round robin on the route's per-destination cursor (`Smooth`), at
/// random, or by the request's consistent-hash key `hash` (the client's
/// address hash for `SourceIp`, as the kernel's; `None` when the request
/// lacks the key: at random, as Envoy). `None`: the destination has no
/// endpoint.
pub fn endpoint<'a>(
    dest: &'a Destination,
    selection: &HttpSelection,
    index: usize,
    state: &RouteState,
    hash: Option<u32>,
) -> Option<&'a Endpoint> {
    let n = dest.endpoints.len();
    if n == 0 {
        return None;
    }
    let k = match (selection, hash) {
        (HttpSelection::Smooth, _) => {
            let next = state.next_endpoint[index % MAX_DESTS].fetch_add(1, Ordering::Relaxed);
            usize::try_from(next % n as u64).unwrap_or(0)
        }
        (HttpSelection::Random, _) | (_, None) => random_u32() as usize % n,
        (_, Some(hash)) => source_hash([hash, 0x5bd1_e995, 0, 0]) as usize % n,
    };
    dest.endpoints.get(k)
}

/// The kernel's hash of a client address (`source_hash` over its words in
/// network order), so a client's consistent-hash choice is the same on the
/// TCP path and here.
pub fn client_hash(client: SocketAddr) -> u32 {
    source_hash(addr_words(service_key(client).addr))
}

/// The hash of a header, cookie or query parameter value.
pub fn value_hash(value: &[u8]) -> u32 {
    let h = value.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    #[expect(clippy::cast_possible_truncation, reason = "the two halves, folded")]
    source_hash([h as u32, (h >> 32) as u32, 0, 0])
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A fast thread-local xorshift64* generator: for `RANDOM` selection and
/// fault percentages, where no security is at stake.
pub fn random_u32() -> u32 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        // The high half: the well-mixed bits.
        u32::try_from(x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32).unwrap_or(0)
    })
}

/// True for `percentage` percent of the calls (0.0..=100.0).
pub fn chance(percentage: f64) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    if percentage <= 0.0 {
        return false;
    }
    f64::from(random_u32()) < percentage / 100.0 * f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_shares_are_exact_and_spread() {
        for (percentage, per_thousand) in [(20.0, 200), (35.0, 350), (50.0, 500), (0.1, 1)] {
            let n = (0..1000).filter(|&n| mirrored(n, percentage)).count();
            assert_eq!(n, per_thousand, "{percentage}%");
        }
        // Spread: 20% is one request of every five.
        let first: Vec<bool> = (0..10).map(|n| mirrored(n, 20.0)).collect();
        assert_eq!(
            first,
            [
                false, false, false, false, true, false, false, false, false, true
            ]
        );
        assert!((0..100).all(|n| mirrored(n, 100.0)));
        assert!(!(0..100).any(|n| mirrored(n, 0.0)));
    }
    use traffic_shift_config::model::{HttpDestination, Retries, Selection};

    fn route(weights: &[u32], selection: HttpSelection) -> HttpRoute {
        HttpRoute {
            key: "default/reviews/http[0]".into(),
            name: None,
            matches: Vec::new(),
            destinations: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| HttpDestination {
                    destination: Destination {
                        host: "reviews".into(),
                        subset: Some(format!("v{i}")),
                        weight,
                        endpoint_selection: Selection::Smooth,
                        outlier: None,
                        endpoints: Vec::new(),
                    },
                    http2: false,
                    endpoint_selection: HttpSelection::Smooth,
                    headers: traffic_shift_config::model::Headers::default(),
                    actions: None,
                })
                .collect(),
            selection,
            redirect: None,
            direct_response: None,
            rewrite: None,
            timeout: None,
            retries: Retries::default(),
            fault: None,
            mirrors: Vec::new(),
            headers: traffic_shift_config::model::Headers::default(),
            cors: None,
        }
    }

    #[test]
    fn smooth_80_20_gives_exactly_20_of_every_100() {
        let route = route(&[80, 20], HttpSelection::Smooth);
        let slots = Slots::build(&route);
        let state = RouteState::default();
        for window in 0..10 {
            let second = (0..100)
                .filter(|_| slots.pick(&route.selection, &state, None) == 1)
                .count();
            assert_eq!(second, 20, "window {window}: 80/20 must give 20 of 100");
        }
    }

    /// A rollout's start: the canary added with weight 0 (config
    /// `resolve::rollout`) is never picked, whichever way the route selects.
    #[test]
    fn a_weight_0_destination_is_never_picked() {
        for selection in [
            HttpSelection::Smooth,
            HttpSelection::Random,
            HttpSelection::SourceIp,
            HttpSelection::Header("end-user".into()),
        ] {
            for (weights, picked) in [([100, 0], 0), ([0, 100], 1)] {
                let route = route(&weights, selection.clone());
                let slots = Slots::build(&route);
                let state = RouteState::default();
                for i in 0..1000 {
                    let hash = value_hash(format!("user{i}").as_bytes());
                    assert_eq!(
                        slots.pick(&route.selection, &state, Some(hash)),
                        picked,
                        "{selection:?} {weights:?} request {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn smooth_state_survives_a_rebuild_of_the_table() {
        let state = RouteState::default();
        let before = route(&[50, 50], HttpSelection::Smooth);
        let slots = Slots::build(&before);
        let first = slots.pick(&before.selection, &state, None);
        let rebuilt = Slots::build(&before);
        let second = rebuilt.pick(&before.selection, &state, None);
        assert_ne!(first, second, "the cursor moves on across a rebuild");
    }

    #[test]
    fn hashing_is_stable_and_follows_weights() {
        let route = route(&[80, 20], HttpSelection::Header("end-user".into()));
        let slots = Slots::build(&route);
        let state = RouteState::default();
        let users: Vec<u32> = (0..10_000)
            .map(|i| value_hash(format!("user{i}").as_bytes()))
            .collect();
        let picks: Vec<usize> = users
            .iter()
            .map(|&h| slots.pick(&route.selection, &state, Some(h)))
            .collect();
        let again: Vec<usize> = users
            .iter()
            .map(|&h| slots.pick(&route.selection, &state, Some(h)))
            .collect();
        assert_eq!(picks, again, "a key keeps its destination");
        let second = picks.iter().filter(|&&d| d == 1).count();
        // Binomial sd for 10000 x 0.2 is 40; 4 sigma is 160.
        assert!(
            (1840..=2160).contains(&second),
            "80/20 by hash gave {second} of 10000 to the second"
        );
    }

    #[test]
    fn random_follows_weights() {
        let route = route(&[80, 20], HttpSelection::Random);
        let slots = Slots::build(&route);
        let state = RouteState::default();
        let second = (0..10_000)
            .filter(|_| slots.pick(&route.selection, &state, None) == 1)
            .count();
        // Binomial sd for 10000 x 0.2 is 40; 4 sigma is 160.
        assert!(
            (1840..=2160).contains(&second),
            "80/20 at random gave {second} of 10000 to the second"
        );
    }

    #[test]
    fn source_ip_hash_is_the_kernel_hash_of_the_client_address() {
        let client: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let other_port: SocketAddr = "10.1.2.3:40002".parse().unwrap();
        assert_eq!(
            client_hash(client),
            client_hash(other_port),
            "the port does not count"
        );
        assert_eq!(
            client_hash(client),
            source_hash([u32::from_ne_bytes([10, 1, 2, 3]), 0, 0, 0])
        );
    }

    #[test]
    fn chance_bounds() {
        assert!((0..1000).all(|_| chance(100.0)));
        assert!((0..1000).all(|_| !chance(0.0)));
        let hits = (0..100_000).filter(|_| chance(10.0)).count();
        // sd 95; 5 sigma.
        assert!(
            (9_525..=10_475).contains(&hits),
            "10% gave {hits} of 100000"
        );
    }
}
