//! The group coordinator: membership of consumer groups and their
//! rebalances, as Kafka's classic group protocol defines them.
//!
//! A group moves through `Empty` → `PreparingRebalance` (members join;
//! JoinGroup calls wait) → `CompletingRebalance` (a new generation; the
//! leader computes the assignment; SyncGroup calls wait for it) → `Stable`
//! (members heartbeat). A member joining, leaving, or missing heartbeats for
//! its session timeout starts a new rebalance; members that do not rejoin
//! within the rebalance timeout are dropped from it.
//!
//! Membership lives in memory (as in Kafka, clients rejoin after a broker
//! restart); committed offsets are the log's own consumer-group offsets.
//! This module knows the protocol's rules but not its message types.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often expired sessions are looked for.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// Bounds on the timeouts clients may ask for (Kafka's
/// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`).
const MIN_SESSION: Duration = Duration::from_millis(1000);
const MAX_SESSION: Duration = Duration::from_secs(1800);
/// Longest a JoinGroup or SyncGroup waits.
const MAX_REBALANCE: Duration = Duration::from_secs(300);
/// Members of one group (Kafka's `group.max.size` is unlimited by default;
/// a bound keeps one client from filling memory with member ids).
const MAX_MEMBERS: usize = 1000;
/// Largest protocol metadata or assignment a member may hand in.
const MAX_MEMBER_BYTES: usize = 1 << 20;
/// Group ids are at most this long, tenant prefix included.
const MAX_GROUP_ID: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    /// The state name Kafka's tools show.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// A JoinGroup as the coordinator sees it.
pub struct Join {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// Supported assignment protocols with their metadata, preferred first.
    pub protocols: Vec<(String, Bytes)>,
    /// A first join gets its member id and must join again with it
    /// (KIP-394, JoinGroup v4+), so a join the client gave up on leaves no
    /// member behind.
    pub id_required: bool,
}

/// How a join ends.
pub enum JoinOutcome {
    Joined(Joined),
    /// Join again with this member id.
    MemberIdRequired(String),
}

/// What a completed join answers.
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

/// A member as DescribeGroups shows it.
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as ListGroups and DescribeGroups show it.
pub struct GroupView {
    pub phase: Phase,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

struct Member {
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    /// Joined the rebalance under way.
    joined: bool,
    /// Waiting in a JoinGroup or SyncGroup call (its session does not run).
    waiting: bool,
}

struct GroupState {
    phase: Phase,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED and not yet used, with
    /// when they lapse.
    pending: HashMap<String, Instant>,
    /// When the rebalance under way completes even if members are missing.
    rebalance_deadline: Option<Instant>,
    /// Counts completed join rounds, so waiters see theirs completed.
    round: u64,
    /// While a forming group waits for more members to join.
    settle_until: Option<Instant>,
}

struct Group {
    state: Mutex<GroupState>,
    changed: Notify,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every group's membership.
#[derive(Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// How long a forming group waits for more members.
    initial_delay: Duration,
}

type Result<T> = std::result::Result<T, ResponseError>;

impl Coordinator {
    /// A coordinator whose expired members are dropped by a background
    /// task; forming groups wait `initial_delay` for more members.
    pub fn start(initial_delay: Duration) -> Arc<Coordinator> {
        let coordinator = Arc::new(Coordinator {
            initial_delay,
            ..Coordinator::default()
        });
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(coordinator) = weak.upgrade() else {
                    return;
                };
                coordinator.expire_sessions();
            }
        });
        coordinator
    }

    fn group(&self, id: &str) -> Arc<Group> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Group {
                    state: Mutex::new(GroupState {
                        phase: Phase::Empty,
                        generation: 0,
                        protocol_type: String::new(),
                        protocol: String::new(),
                        leader: String::new(),
                        members: BTreeMap::new(),
                        rebalance_deadline: None,
                        round: 0,
                        pending: HashMap::new(),
                        settle_until: None,
                    }),
                    changed: Notify::new(),
                })
            })
            .clone()
    }

    fn existing(&self, id: &str) -> Option<Arc<Group>> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.get(id).cloned()
    }

    /// Joins (or rejoins) `group` and waits until the rebalance completes.
    pub async fn join(&self, group_id: &str, join: Join) -> Result<JoinOutcome> {
        let session = join.session_timeout;
        if !(MIN_SESSION..=MAX_SESSION).contains(&session) {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        if join.protocols.is_empty() || join.protocol_type.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        check_group_id(group_id)?;
        if join
            .protocols
            .iter()
            .any(|(_, m)| m.len() > MAX_MEMBER_BYTES)
        {
            return Err(ResponseError::InvalidRequest);
        }
        // Copies: the metadata must not keep the whole request frame alive.
        let protocols: Vec<(String, Bytes)> = join
            .protocols
            .into_iter()
            .map(|(name, metadata)| (name, Bytes::copy_from_slice(&metadata)))
            .collect();
        let group = self.group(group_id);
        let (member_id, round) = {
            let mut state = group.lock();
            if !state.members.is_empty() {
                let common = protocols
                    .iter()
                    .any(|(name, _)| state.members.values().all(|m| supports(m, name)));
                if join.protocol_type != state.protocol_type || !common {
                    return Err(ResponseError::InconsistentGroupProtocol);
                }
            }
            let member_id = if join.member_id.is_empty() {
                if state.members.len() + state.pending.len() >= MAX_MEMBERS {
                    return Err(ResponseError::GroupMaxSizeReached);
                }
                let id = format!("{}-{}", join.client_id, random_id());
                if join.id_required {
                    state.pending.insert(id.clone(), Instant::now() + session);
                    return Ok(JoinOutcome::MemberIdRequired(id));
                }
                id
            } else if state.members.contains_key(&join.member_id)
                || state.pending.remove(&join.member_id).is_some()
            {
                join.member_id.clone()
            } else {
                return Err(ResponseError::UnknownMemberId);
            };
            state.protocol_type = join.protocol_type.clone();
            let known = state.members.get(&member_id);
            // A member rejoining with nothing changed gets the current
            // generation back without a rebalance (its JoinGroup answer was
            // lost), while the leader's SyncGroup is awaited or once the
            // group is stable. The leader rejoining a stable group always
            // rebalances: that is how it asks for a new assignment when
            // topic metadata changed.
            let same = known.is_some_and(|m| m.protocols == protocols);
            let unchanged = same
                && match state.phase {
                    Phase::CompletingRebalance => true,
                    Phase::Stable => state.leader != member_id,
                    Phase::Empty | Phase::PreparingRebalance => false,
                };
            let member = Member {
                client_id: join.client_id,
                client_host: join.client_host,
                session_timeout: session,
                rebalance_timeout: join.rebalance_timeout.min(MAX_REBALANCE),
                protocols,
                assignment: known.map(|m| m.assignment.clone()).unwrap_or_default(),
                last_seen: Instant::now(),
                joined: true,
                waiting: !unchanged,
            };
            state.members.insert(member_id.clone(), member);
            if unchanged {
                return Ok(JoinOutcome::Joined(joined(&state, &member_id)));
            }
            let was_empty = state.phase == Phase::Empty;
            if state.phase != Phase::PreparingRebalance {
                prepare_rebalance(&mut state);
            }
            // A group forming waits a moment for the members starting with
            // this one (Kafka's initial rebalance delay), each newcomer
            // extending the wait, so they form one generation, not many.
            if !self.initial_delay.is_zero() && (was_empty || state.settle_until.is_some()) {
                let settle = Instant::now() + self.initial_delay;
                let deadline = state.rebalance_deadline.unwrap_or(settle);
                state.settle_until = Some(settle.min(deadline));
            }
            (member_id, state.round)
        };
        group.changed.notify_waiters();
        loop {
            let notified = group.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut state = group.lock();
                let settling = state.settle_until.is_some_and(|t| Instant::now() < t);
                if state.round == round && all_joined(&state) && !settling {
                    complete_join(&mut state);
                    group.changed.notify_waiters();
                }
                if state.round > round {
                    return match state.members.get_mut(&member_id) {
                        Some(member) => {
                            member.waiting = false;
                            member.last_seen = Instant::now();
                            Ok(JoinOutcome::Joined(joined(&state, &member_id)))
                        }
                        None => Err(ResponseError::UnknownMemberId),
                    };
                }
                let deadline = state.rebalance_deadline.unwrap_or_else(Instant::now);
                match state.settle_until {
                    Some(settle) if settling => settle.min(deadline),
                    _ => deadline,
                }
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut state = group.lock();
                let overdue = state.rebalance_deadline.is_none_or(|d| Instant::now() >= d);
                if state.round == round && overdue {
                    complete_join(&mut state);
                    group.changed.notify_waiters();
                }
            }
        }
    }

    /// The leader hands out assignments; every member waits for its own.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes> {
        let group = self
            .existing(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let wait = {
            let mut state = group.lock();
            check_member(&state, generation, member_id)?;
            if state.phase == Phase::PreparingRebalance {
                return Err(ResponseError::RebalanceInProgress);
            }
            if state.phase == Phase::CompletingRebalance && state.leader == member_id {
                if assignments.iter().any(|(_, a)| a.len() > MAX_MEMBER_BYTES) {
                    return Err(ResponseError::InvalidRequest);
                }
                for (id, assignment) in assignments {
                    if let Some(member) = state.members.get_mut(&id) {
                        member.assignment = Bytes::copy_from_slice(&assignment);
                    }
                }
                state.phase = Phase::Stable;
                group.changed.notify_waiters();
            }
            let member = state.members.get_mut(member_id).expect("checked");
            member.waiting = true;
            member.rebalance_timeout
        };
        let deadline = Instant::now() + wait;
        let result = loop {
            let notified = group.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = group.lock();
                if let Err(e) = check_member(&state, generation, member_id) {
                    break Err(e);
                }
                match state.phase {
                    Phase::Stable => break Ok(state.members[member_id].assignment.clone()),
                    Phase::PreparingRebalance | Phase::Empty => {
                        break Err(ResponseError::RebalanceInProgress);
                    }
                    Phase::CompletingRebalance => {}
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // The leader never synced: start over.
                let mut state = group.lock();
                if state.generation == generation && state.phase == Phase::CompletingRebalance {
                    prepare_rebalance(&mut state);
                    group.changed.notify_waiters();
                }
            }
        };
        let mut state = group.lock();
        if let Some(member) = state.members.get_mut(member_id) {
            member.waiting = false;
            member.last_seen = Instant::now();
        }
        result
    }

    /// Keeps a member's session alive; tells it when to rejoin.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> Result<()> {
        let group = self
            .existing(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let mut state = group.lock();
        check_member(&state, generation, member_id)?;
        state.members.get_mut(member_id).expect("checked").last_seen = Instant::now();
        match state.phase {
            Phase::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Removes members; the rest rebalance. Returns each member's outcome.
    pub fn leave(&self, group_id: &str, members: &[String]) -> Vec<Result<()>> {
        let Some(group) = self.existing(group_id) else {
            return members
                .iter()
                .map(|_| Err(ResponseError::UnknownMemberId))
                .collect();
        };
        let outcomes = {
            let mut state = group.lock();
            let outcomes: Vec<Result<()>> = members
                .iter()
                .map(|id| match state.members.remove(id) {
                    Some(_) => Ok(()),
                    None => Err(ResponseError::UnknownMemberId),
                })
                .collect();
            if outcomes.iter().any(Result::is_ok) {
                membership_changed(&mut state);
            }
            outcomes
        };
        group.changed.notify_waiters();
        outcomes
    }

    /// Checks an offset commit as Kafka's classic coordinator does: one
    /// without member id and generation (a client assigning partitions
    /// itself) only while the group has no members; otherwise from a
    /// current member of the current generation, refused while the leader's
    /// assignment is awaited (it may move the partitions).
    pub fn check_commit(&self, group_id: &str, generation: i32, member_id: &str) -> Result<()> {
        check_group_id(group_id)?;
        let group = self.existing(group_id);
        let state = group.as_ref().map(|g| g.lock());
        let members = state.as_ref().map_or(0, |s| s.members.len());
        if generation < 0 && member_id.is_empty() {
            return match members {
                0 => Ok(()),
                _ => Err(ResponseError::UnknownMemberId),
            };
        }
        let state = state.ok_or(ResponseError::UnknownMemberId)?;
        if state.phase == Phase::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        check_member(&state, generation, member_id)
    }

    /// Groups with members, by id.
    pub fn views(&self) -> Vec<(String, GroupView)> {
        let groups: Vec<(String, Arc<Group>)> = {
            let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        groups
            .into_iter()
            .map(|(id, group)| (id, view(&group.lock())))
            .collect()
    }

    pub fn view(&self, group_id: &str) -> Option<GroupView> {
        self.existing(group_id).map(|g| view(&g.lock()))
    }

    /// Drops members whose session ran out; their groups rebalance.
    fn expire_sessions(&self) {
        let groups: Vec<Arc<Group>> = {
            let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups.values().cloned().collect()
        };
        let now = Instant::now();
        for group in &groups {
            let changed = {
                let mut state = group.lock();
                let before = state.members.len();
                state
                    .members
                    .retain(|_, m| m.waiting || now < m.last_seen + m.session_timeout);
                let changed = state.members.len() != before;
                state.pending.retain(|_, lapses| now < *lapses);
                if changed {
                    tracing::info!(
                        "consumer group members expired: {} left",
                        state.members.len()
                    );
                    membership_changed(&mut state);
                }
                changed
            };
            if changed {
                group.changed.notify_waiters();
            }
        }
        drop(groups);
        // Forget groups nobody is in (their committed offsets stay in the
        // log); a group still referenced by a call in progress is kept.
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|_, group| {
            let state = group.lock();
            Arc::strong_count(group) > 1 || !state.members.is_empty() || !state.pending.is_empty()
        });
    }
}

fn check_group_id(group_id: &str) -> Result<()> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

fn supports(member: &Member, protocol: &str) -> bool {
    member.protocols.iter().any(|(name, _)| name == protocol)
}

fn check_member(state: &GroupState, generation: i32, member_id: &str) -> Result<()> {
    if !state.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    if generation != state.generation {
        return Err(ResponseError::IllegalGeneration);
    }
    Ok(())
}

/// Starts a rebalance: every member must join again.
fn prepare_rebalance(state: &mut GroupState) {
    state.phase = Phase::PreparingRebalance;
    for member in state.members.values_mut() {
        member.joined = member.waiting && member.joined;
    }
    let timeout = state
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    state.rebalance_deadline = Some(Instant::now() + timeout);
}

/// After members left: rebalance the rest, or become empty.
fn membership_changed(state: &mut GroupState) {
    if state.members.is_empty() {
        state.phase = Phase::Empty;
        state.generation += 1;
        state.leader.clear();
        state.rebalance_deadline = None;
        state.round += 1;
    } else if state.phase != Phase::PreparingRebalance {
        prepare_rebalance(state);
    }
}

fn all_joined(state: &GroupState) -> bool {
    state.phase == Phase::PreparingRebalance && state.members.values().all(|m| m.joined)
}

/// Ends the join phase: members that did not join are dropped, a new
/// generation begins with a leader and a protocol every member supports.
fn complete_join(state: &mut GroupState) {
    state.members.retain(|_, m| m.joined);
    state.settle_until = None;
    state.round += 1;
    state.rebalance_deadline = None;
    state.generation += 1;
    if state.members.is_empty() {
        state.phase = Phase::Empty;
        state.leader.clear();
        return;
    }
    if !state.members.contains_key(&state.leader) {
        state.leader = state.members.keys().next().expect("not empty").clone();
    }
    let leader = &state.members[&state.leader];
    state.protocol = leader
        .protocols
        .iter()
        .map(|(name, _)| name)
        .find(|name| state.members.values().all(|m| supports(m, name)))
        .cloned()
        .unwrap_or_default();
    state.phase = Phase::CompletingRebalance;
    for member in state.members.values_mut() {
        member.joined = false;
        // Only the leader's SyncGroup for this generation assigns.
        member.assignment = Bytes::new();
    }
}

fn joined(state: &GroupState, member_id: &str) -> Joined {
    let members = if state.leader == member_id {
        state
            .members
            .iter()
            .map(|(id, m)| (id.clone(), metadata(m, &state.protocol)))
            .collect()
    } else {
        Vec::new()
    };
    Joined {
        generation: state.generation,
        protocol_type: state.protocol_type.clone(),
        protocol: state.protocol.clone(),
        leader: state.leader.clone(),
        member_id: member_id.to_string(),
        members,
    }
}

fn metadata(member: &Member, protocol: &str) -> Bytes {
    member
        .protocols
        .iter()
        .find(|(name, _)| name == protocol)
        .map(|(_, m)| m.clone())
        .unwrap_or_default()
}

fn view(state: &GroupState) -> GroupView {
    GroupView {
        phase: state.phase,
        protocol_type: state.protocol_type.clone(),
        protocol: state.protocol.clone(),
        members: state
            .members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: metadata(m, &state.protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member_id: &str) -> Join {
        Join {
            member_id: member_id.to_string(),
            client_id: "test".into(),
            client_host: "127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            id_required: false,
        }
    }

    fn joined(outcome: JoinOutcome) -> Joined {
        match outcome {
            JoinOutcome::Joined(joined) => joined,
            JoinOutcome::MemberIdRequired(_) => panic!("joined without an id first"),
        }
    }

    #[tokio::test]
    async fn commits_follow_kafkas_rules_through_a_generation() {
        let coordinator = Coordinator::default();
        // No members: a client assigning partitions itself may commit.
        assert_eq!(coordinator.check_commit("g", -1, ""), Ok(()));
        let joined = joined(coordinator.join("g", join("")).await.unwrap());
        assert_eq!(
            (joined.generation, joined.leader.as_str()),
            (1, joined.member_id.as_str())
        );
        assert_eq!(joined.members.len(), 1, "the leader sees every member");
        let id = joined.member_id.clone();
        // The leader's assignment is awaited: commits wait for it.
        assert_eq!(
            coordinator.check_commit("g", 1, &id),
            Err(ResponseError::RebalanceInProgress)
        );
        let assigned = coordinator
            .sync("g", 1, &id, vec![(id.clone(), Bytes::from_static(b"all"))])
            .await
            .unwrap();
        assert_eq!(assigned, Bytes::from_static(b"all"));
        assert_eq!(coordinator.check_commit("g", 1, &id), Ok(()));
        assert_eq!(
            coordinator.check_commit("g", 0, &id),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            coordinator.check_commit("g", -1, ""),
            Err(ResponseError::UnknownMemberId),
            "a group with members takes commits only from them"
        );
        assert_eq!(coordinator.heartbeat("g", 1, &id), Ok(()));
        assert_eq!(
            coordinator.heartbeat("g", 1, "stranger"),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            coordinator.leave("g", std::slice::from_ref(&id)),
            vec![Ok(())]
        );
        assert_eq!(coordinator.view("g").unwrap().phase, Phase::Empty);
        assert_eq!(coordinator.check_commit("g", -1, ""), Ok(()));
        assert_eq!(
            coordinator.check_commit("", -1, ""),
            Err(ResponseError::InvalidGroupId)
        );
        // Empty groups are forgotten by the sweep.
        coordinator.expire_sessions();
        assert!(coordinator.view("g").is_none());
    }

    #[tokio::test]
    async fn a_rejoin_while_the_assignment_is_awaited_keeps_the_generation() {
        let coordinator = Coordinator::default();
        let first = joined(coordinator.join("g", join("")).await.unwrap());
        let again = joined(coordinator.join("g", join(&first.member_id)).await.unwrap());
        assert_eq!(again.generation, first.generation);
        assert_eq!(
            coordinator.view("g").unwrap().phase,
            Phase::CompletingRebalance
        );
    }

    #[tokio::test]
    async fn a_first_join_may_be_asked_to_come_back_with_its_id() {
        let coordinator = Coordinator::default();
        let first = Join {
            id_required: true,
            ..join("")
        };
        let JoinOutcome::MemberIdRequired(id) = coordinator.join("g", first).await.unwrap() else {
            panic!("a v4+ first join gets its id first");
        };
        assert!(
            coordinator.view("g").unwrap().members.is_empty(),
            "no member yet"
        );
        let member = joined(coordinator.join("g", join(&id)).await.unwrap());
        assert_eq!(member.member_id, id);
        assert_eq!(
            coordinator.join("g", join("made-up")).await.err(),
            Some(ResponseError::UnknownMemberId)
        );
    }

    #[tokio::test]
    async fn members_starting_together_form_one_generation() {
        let coordinator = Arc::new(Coordinator {
            initial_delay: Duration::from_millis(300),
            ..Coordinator::default()
        });
        let first = tokio::spawn({
            let coordinator = coordinator.clone();
            async move { joined(coordinator.join("g", join("")).await.unwrap()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = joined(coordinator.join("g", join("")).await.unwrap());
        let first = first.await.unwrap();
        assert_eq!((first.generation, second.generation), (1, 1));
        assert_eq!(coordinator.view("g").unwrap().members.len(), 2);
    }
}
