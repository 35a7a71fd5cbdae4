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
//!
//! One file on purpose, though long: the group protocol's transitions
//! (join, sync, heartbeat, leave, expiry) read best side by side.

mod group;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;

use group::{
    Group, GroupState, Member, Waiting, all_joined, check_instance, check_member, complete_join,
    instance_member, joined, membership_changed, prepare_rebalance, supports, view,
};

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

fn check_group_id(group_id: &str) -> Result<()> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
