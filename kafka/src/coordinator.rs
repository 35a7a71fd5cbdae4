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
//! Static members (KIP-345) name themselves with a group instance id: one
//! that restarts and joins again under the same instance id takes over its
//! old member's place and assignment without a rebalance, and requests
//! from the member it replaced are fenced (FENCED_INSTANCE_ID).
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
    /// member behind. Static members are exempt: their instance id already
    /// names them.
    pub id_required: bool,
    /// The static member's group instance id (JoinGroup v5+).
    pub instance_id: Option<String>,
}

/// Who sends a group request: its member id, and its group instance id
/// when it is a static member.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
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
    /// For the leader: every member (id, instance id, metadata for the
    /// chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A member as DescribeGroups shows it.
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
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
    instance_id: Option<String>,
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
        let my_instance = join.instance_id.clone();
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
            let instance = join.instance_id.as_deref();
            let restarted = match instance {
                Some(instance) if join.member_id.is_empty() => {
                    instance_member(&state, instance).cloned()
                }
                _ => None,
            };
            let member_id = if let Some(old) = &restarted {
                // A static member back from a restart takes over its old
                // member's place: same assignment, same leadership.
                let id = format!("{}-{}", join.client_id, random_id());
                let member = state.members.remove(old).expect("found by instance");
                state.members.insert(id.clone(), member);
                if state.leader == *old {
                    state.leader = id.clone();
                }
                id
            } else if join.member_id.is_empty() {
                if state.members.len() + state.pending.len() >= MAX_MEMBERS {
                    return Err(ResponseError::GroupMaxSizeReached);
                }
                let id = format!("{}-{}", join.client_id, random_id());
                if join.id_required && instance.is_none() {
                    state.pending.insert(id.clone(), Instant::now() + session);
                    return Ok(JoinOutcome::MemberIdRequired(id));
                }
                id
            } else if instance.is_some() {
                check_instance(&state, &join.member_id, instance)?;
                join.member_id.clone()
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
            // topic metadata changed. A static member back from a restart
            // does not while the group is stable and the group's protocol
            // still suits it (KIP-345); while an assignment is being made
            // it does, for that assignment names the member it replaced.
            let unchanged = match (&restarted, state.phase) {
                (Some(_), Phase::Stable) => {
                    protocols.iter().any(|(name, _)| *name == state.protocol)
                }
                (Some(_), _) => false,
                (None, phase) => {
                    known.is_some_and(|m| m.protocols == protocols)
                        && match phase {
                            Phase::CompletingRebalance => true,
                            Phase::Stable => state.leader != member_id,
                            Phase::Empty | Phase::PreparingRebalance => false,
                        }
                }
            };
            let member = Member {
                instance_id: join
                    .instance_id
                    .or_else(|| known.and_then(|m| m.instance_id.clone())),
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
                let mut answer = joined(&state, &member_id);
                if let Some(old) = restarted {
                    // Calls still waiting under the replaced id learn that
                    // they are fenced.
                    group.changed.notify_waiters();
                    // A restarted leader is not told that it leads: it would
                    // compute an assignment nobody asked for (Kafka answers
                    // so before KIP-814).
                    if answer.leader == member_id {
                        answer.leader = old;
                        answer.members.clear();
                    }
                }
                return Ok(JoinOutcome::Joined(answer));
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
        let _waiting = Waiting {
            group: &group,
            member_id: member_id.clone(),
        };
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
                    if state.members.contains_key(&member_id) {
                        return Ok(JoinOutcome::Joined(joined(&state, &member_id)));
                    }
                    // Gone: dropped from the round, or replaced by a restart
                    // of the same static member.
                    let replaced = my_instance
                        .as_deref()
                        .is_some_and(|i| instance_member(&state, i).is_some());
                    return Err(match replaced {
                        true => ResponseError::FencedInstanceId,
                        false => ResponseError::UnknownMemberId,
                    });
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
        caller: Caller<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes> {
        let member_id = caller.member_id;
        let group = self
            .existing(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let wait = {
            let mut state = group.lock();
            check_member(&state, generation, caller)?;
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
        let _waiting = Waiting {
            group: &group,
            member_id: member_id.to_string(),
        };
        let deadline = Instant::now() + wait;
        loop {
            let notified = group.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = group.lock();
                check_member(&state, generation, caller)?;
                match state.phase {
                    Phase::Stable => return Ok(state.members[member_id].assignment.clone()),
                    Phase::PreparingRebalance | Phase::Empty => {
                        return Err(ResponseError::RebalanceInProgress);
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
        }
    }

    /// Keeps a member's session alive; tells it when to rejoin.
    pub fn heartbeat(&self, group_id: &str, generation: i32, caller: Caller<'_>) -> Result<()> {
        let group = self
            .existing(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let mut state = group.lock();
        check_member(&state, generation, caller)?;
        let member = state.members.get_mut(caller.member_id).expect("checked");
        member.last_seen = Instant::now();
        match state.phase {
            Phase::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Removes members; the rest rebalance. Returns each member's outcome.
    /// A static member may be named by its instance id alone.
    pub fn leave(&self, group_id: &str, members: &[Caller<'_>]) -> Vec<Result<()>> {
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
                .map(|caller| {
                    let id = match caller.instance_id {
                        Some(instance) if caller.member_id.is_empty() => {
                            instance_member(&state, instance)
                                .cloned()
                                .ok_or(ResponseError::UnknownMemberId)?
                        }
                        _ => {
                            check_instance(&state, caller.member_id, caller.instance_id)?;
                            caller.member_id.to_string()
                        }
                    };
                    match state.members.remove(&id) {
                        Some(_) => Ok(()),
                        None => Err(ResponseError::UnknownMemberId),
                    }
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
    pub fn check_commit(&self, group_id: &str, generation: i32, caller: Caller<'_>) -> Result<()> {
        check_group_id(group_id)?;
        let group = self.existing(group_id);
        let state = group.as_ref().map(|g| g.lock());
        let members = state.as_ref().map_or(0, |s| s.members.len());
        if generation < 0 && caller.member_id.is_empty() {
            return match members {
                0 => Ok(()),
                _ => Err(ResponseError::UnknownMemberId),
            };
        }
        let state = state.ok_or(ResponseError::UnknownMemberId)?;
        if state.phase == Phase::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        check_member(&state, generation, caller)
    }

    /// Forgets every group whose id matches (a deleted tenant's): members
    /// are dropped, and calls waiting in the groups end with
    /// UNKNOWN_MEMBER_ID. Their committed offsets are the log's to forget.
    pub fn forget_groups(&self, matches: impl Fn(&str) -> bool) {
        let forgotten: Vec<Arc<Group>> = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<String> = groups.keys().filter(|id| matches(id)).cloned().collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        for group in forgotten {
            {
                let mut state = group.lock();
                state.members.clear();
                state.pending.clear();
                state.settle_until = None;
                membership_changed(&mut state);
            }
            group.changed.notify_waiters();
        }
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

/// A member waiting in a JoinGroup or SyncGroup call: its session does not
/// run meanwhile, and runs again from when the call ends, however it ends.
/// A call dropped midway (its connection closed) thus leaves no member
/// that never expires.
struct Waiting<'a> {
    group: &'a Group,
    member_id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.group.lock();
        if let Some(member) = state.members.get_mut(&self.member_id) {
            member.waiting = false;
            member.last_seen = Instant::now();
        }
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

fn check_member(state: &GroupState, generation: i32, caller: Caller<'_>) -> Result<()> {
    check_instance(state, caller.member_id, caller.instance_id)?;
    if !state.members.contains_key(caller.member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    if generation != state.generation {
        return Err(ResponseError::IllegalGeneration);
    }
    Ok(())
}

/// A static member's requests must come from the member that holds its
/// instance id now: one it replaced is fenced.
fn check_instance(state: &GroupState, member_id: &str, instance: Option<&str>) -> Result<()> {
    let Some(instance) = instance else {
        return Ok(());
    };
    match instance_member(state, instance) {
        Some(id) if id == member_id => Ok(()),
        Some(_) => Err(ResponseError::FencedInstanceId),
        None => Err(ResponseError::UnknownMemberId),
    }
}

/// The member id that holds a group instance id.
fn instance_member<'a>(state: &'a GroupState, instance: &str) -> Option<&'a String> {
    state
        .members
        .iter()
        .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
        .map(|(id, _)| id)
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
            .map(|(id, m)| {
                let instance = m.instance_id.clone();
                (id.clone(), instance, metadata(m, &state.protocol))
            })
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
                instance_id: m.instance_id.clone(),
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
            instance_id: None,
        }
    }

    fn dynamic(member_id: &str) -> Caller<'_> {
        Caller {
            member_id,
            instance_id: None,
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
        assert_eq!(coordinator.check_commit("g", -1, dynamic("")), Ok(()));
        let joined = joined(coordinator.join("g", join("")).await.unwrap());
        assert_eq!(
            (joined.generation, joined.leader.as_str()),
            (1, joined.member_id.as_str())
        );
        assert_eq!(joined.members.len(), 1, "the leader sees every member");
        let id = joined.member_id.clone();
        // The leader's assignment is awaited: commits wait for it.
        assert_eq!(
            coordinator.check_commit("g", 1, dynamic(&id)),
            Err(ResponseError::RebalanceInProgress)
        );
        let assigned = coordinator
            .sync(
                "g",
                1,
                dynamic(&id),
                vec![(id.clone(), Bytes::from_static(b"all"))],
            )
            .await
            .unwrap();
        assert_eq!(assigned, Bytes::from_static(b"all"));
        assert_eq!(coordinator.check_commit("g", 1, dynamic(&id)), Ok(()));
        assert_eq!(
            coordinator.check_commit("g", 0, dynamic(&id)),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            coordinator.check_commit("g", -1, dynamic("")),
            Err(ResponseError::UnknownMemberId),
            "a group with members takes commits only from them"
        );
        assert_eq!(coordinator.heartbeat("g", 1, dynamic(&id)), Ok(()));
        assert_eq!(
            coordinator.heartbeat("g", 1, dynamic("stranger")),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(coordinator.leave("g", &[dynamic(&id)]), vec![Ok(())]);
        assert_eq!(coordinator.view("g").unwrap().phase, Phase::Empty);
        assert_eq!(coordinator.check_commit("g", -1, dynamic("")), Ok(()));
        assert_eq!(
            coordinator.check_commit("", -1, dynamic("")),
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
    fn static_join(member_id: &str, instance: &str) -> Join {
        Join {
            id_required: true,
            instance_id: Some(instance.to_string()),
            ..join(member_id)
        }
    }

    fn static_caller<'a>(member_id: &'a str, instance: &'a str) -> Caller<'a> {
        Caller {
            member_id,
            instance_id: Some(instance),
        }
    }

    #[tokio::test]
    async fn static_members_come_back_from_a_restart_without_a_rebalance() {
        let coordinator = Arc::new(Coordinator::default());
        // A static member gets its id at once (no MEMBER_ID_REQUIRED).
        let a = joined(coordinator.join("g", static_join("", "i-a")).await.unwrap());
        assert_eq!(a.generation, 1);
        coordinator
            .sync("g", 1, static_caller(&a.member_id, "i-a"), vec![])
            .await
            .unwrap();
        // A second one joins: a rebalance, both in generation 2.
        let b = tokio::spawn({
            let coordinator = coordinator.clone();
            async move { joined(coordinator.join("g", static_join("", "i-b")).await.unwrap()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = joined(
            coordinator
                .join("g", static_join(&a.member_id, "i-a"))
                .await
                .unwrap(),
        );
        let b = b.await.unwrap();
        assert_eq!(
            (a.generation, b.generation, a.leader.as_str()),
            (2, 2, a.member_id.as_str())
        );
        let mut instances: Vec<_> = a.members.iter().filter_map(|(_, i, _)| i.clone()).collect();
        instances.sort();
        assert_eq!(
            instances,
            ["i-a", "i-b"],
            "the leader sees the instance ids"
        );
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"p0")),
            (b.member_id.clone(), Bytes::from_static(b"p1")),
        ];
        let sync_b = tokio::spawn({
            let coordinator = coordinator.clone();
            let id = b.member_id.clone();
            async move {
                coordinator
                    .sync("g", 2, static_caller(&id, "i-b"), vec![])
                    .await
            }
        });
        coordinator
            .sync("g", 2, static_caller(&a.member_id, "i-a"), assignments)
            .await
            .unwrap();
        assert_eq!(sync_b.await.unwrap(), Ok(Bytes::from_static(b"p1")));

        // b restarts: same generation, a new member id, its old assignment.
        let b2 = joined(coordinator.join("g", static_join("", "i-b")).await.unwrap());
        assert_eq!(b2.generation, 2, "no rebalance");
        assert_ne!(b2.member_id, b.member_id);
        assert_eq!(coordinator.view("g").unwrap().phase, Phase::Stable);
        let assigned = coordinator
            .sync("g", 2, static_caller(&b2.member_id, "i-b"), vec![])
            .await;
        assert_eq!(assigned, Ok(Bytes::from_static(b"p1")));
        // The instance it replaced is fenced; the other member goes on.
        assert_eq!(
            coordinator.heartbeat("g", 2, static_caller(&b.member_id, "i-b")),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(
            coordinator.heartbeat("g", 2, static_caller(&a.member_id, "i-a")),
            Ok(())
        );
        // The leader restarts: still no rebalance, and it is not asked to
        // assign again; it gets its assignment back.
        let a2 = joined(coordinator.join("g", static_join("", "i-a")).await.unwrap());
        assert_eq!(a2.generation, 2);
        assert_ne!(a2.leader, a2.member_id);
        assert!(a2.members.is_empty());
        assert_eq!(coordinator.view("g").unwrap().phase, Phase::Stable);
        let assigned = coordinator
            .sync("g", 2, static_caller(&a2.member_id, "i-a"), vec![])
            .await;
        assert_eq!(assigned, Ok(Bytes::from_static(b"p0")));
        // A static member may leave by its instance id alone.
        let leaving = Caller {
            member_id: "",
            instance_id: Some("i-b"),
        };
        assert_eq!(coordinator.leave("g", &[leaving]), vec![Ok(())]);
        let view = coordinator.view("g").unwrap();
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.members[0].instance_id.as_deref(), Some("i-a"));
        assert_eq!(view.phase, Phase::PreparingRebalance);
    }

    #[tokio::test]
    async fn a_static_member_restarting_while_the_assignment_is_made_rebalances() {
        let coordinator = Coordinator::default();
        let first = joined(coordinator.join("g", static_join("", "i-a")).await.unwrap());
        assert_eq!(
            coordinator.view("g").unwrap().phase,
            Phase::CompletingRebalance
        );
        // The assignment under way names the replaced member: a new
        // generation is made instead of handing the restart the old one.
        let again = joined(coordinator.join("g", static_join("", "i-a")).await.unwrap());
        assert_eq!(again.generation, first.generation + 1);
        assert_eq!(again.leader, again.member_id);
        assert_eq!(
            coordinator
                .sync(
                    "g",
                    first.generation,
                    static_caller(&first.member_id, "i-a"),
                    vec![]
                )
                .await,
            Err(ResponseError::FencedInstanceId)
        );
    }

    #[tokio::test]
    async fn a_join_dropped_midway_leaves_a_member_that_expires() {
        let coordinator = Arc::new(Coordinator::default());
        let a = joined(coordinator.join("g", join("")).await.unwrap());
        coordinator
            .sync("g", a.generation, dynamic(&a.member_id), vec![])
            .await
            .unwrap();
        // b's join starts a rebalance and waits for a; its connection closes.
        let short = Join {
            session_timeout: MIN_SESSION,
            ..join("")
        };
        let waiting = tokio::spawn({
            let coordinator = coordinator.clone();
            async move { coordinator.join("g", short).await }
        });
        while coordinator.view("g").unwrap().members.len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        waiting.abort();
        assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
        tokio::time::sleep(MIN_SESSION + Duration::from_millis(100)).await;
        coordinator.expire_sessions();
        let members = coordinator.view("g").unwrap().members;
        assert_eq!(members.len(), 1, "b's session ran out");
        assert_eq!(members[0].member_id, a.member_id);
    }

    #[tokio::test]
    async fn forgotten_groups_end_their_waiting_calls() {
        let coordinator = Arc::new(Coordinator::default());
        let a = joined(coordinator.join("acme.g", join("")).await.unwrap());
        coordinator
            .sync("acme.g", a.generation, dynamic(&a.member_id), vec![])
            .await
            .unwrap();
        joined(coordinator.join("other.g", join("")).await.unwrap());
        // A second member waits in a rebalance a will not join.
        let waiting = tokio::spawn({
            let coordinator = coordinator.clone();
            async move { coordinator.join("acme.g", join("")).await }
        });
        while coordinator.view("acme.g").unwrap().members.len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        coordinator.forget_groups(|id| id.starts_with("acme."));
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting join ends at once")
            .unwrap();
        assert_eq!(ended.err(), Some(ResponseError::UnknownMemberId));
        assert!(coordinator.view("acme.g").is_none());
        assert_eq!(
            coordinator.heartbeat("acme.g", a.generation, dynamic(&a.member_id)),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(coordinator.view("other.g").unwrap().members.len(), 1);
    }
}
