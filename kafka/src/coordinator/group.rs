//! One group's state and the rules that move it through its phases:
//! its members (with their sessions and protocols), starting and completing
//! a rebalance, checking who may speak for a member, and what a join
//! answers and DescribeGroups shows. The parent module's [`Coordinator`]
//! takes the requests, waits, and applies these rules under the group's
//! lock.
//!
//! [`Coordinator`]: super::Coordinator

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Caller, GroupView, Joined, MemberView, Phase, Result};

pub(super) struct Member {
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    /// Joined the rebalance under way.
    pub(super) joined: bool,
    /// Waiting in a JoinGroup or SyncGroup call (its session does not run).
    pub(super) waiting: bool,
}

pub(super) struct GroupState {
    pub(super) phase: Phase,
    pub(super) generation: i32,
    pub(super) protocol_type: String,
    pub(super) protocol: String,
    pub(super) leader: String,
    pub(super) members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED and not yet used, with
    /// when they lapse.
    pub(super) pending: HashMap<String, Instant>,
    /// When the rebalance under way completes even if members are missing.
    pub(super) rebalance_deadline: Option<Instant>,
    /// Counts completed join rounds, so waiters see theirs completed.
    pub(super) round: u64,
    /// While a forming group waits for more members to join.
    pub(super) settle_until: Option<Instant>,
}

pub(super) struct Group {
    pub(super) state: Mutex<GroupState>,
    pub(super) changed: Notify,
}

impl Group {
    pub(super) fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A member waiting in a JoinGroup or SyncGroup call: its session does not
/// run meanwhile, and runs again from when the call ends, however it ends.
/// A call dropped midway (its connection closed) thus leaves no member
/// that never expires.
pub(super) struct Waiting<'a> {
    pub(super) group: &'a Group,
    pub(super) member_id: String,
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

pub(super) fn supports(member: &Member, protocol: &str) -> bool {
    member.protocols.iter().any(|(name, _)| name == protocol)
}

pub(super) fn check_member(state: &GroupState, generation: i32, caller: Caller<'_>) -> Result<()> {
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
pub(super) fn check_instance(
    state: &GroupState,
    member_id: &str,
    instance: Option<&str>,
) -> Result<()> {
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
pub(super) fn instance_member<'a>(state: &'a GroupState, instance: &str) -> Option<&'a String> {
    state
        .members
        .iter()
        .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
        .map(|(id, _)| id)
}

/// Starts a rebalance: every member must join again.
pub(super) fn prepare_rebalance(state: &mut GroupState) {
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
pub(super) fn membership_changed(state: &mut GroupState) {
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

pub(super) fn all_joined(state: &GroupState) -> bool {
    state.phase == Phase::PreparingRebalance && state.members.values().all(|m| m.joined)
}

/// Ends the join phase: members that did not join are dropped, a new
/// generation begins with a leader and a protocol every member supports.
pub(super) fn complete_join(state: &mut GroupState) {
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

pub(super) fn joined(state: &GroupState, member_id: &str) -> Joined {
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

pub(super) fn metadata(member: &Member, protocol: &str) -> Bytes {
    member
        .protocols
        .iter()
        .find(|(name, _)| name == protocol)
        .map(|(_, m)| m.clone())
        .unwrap_or_default()
}

pub(super) fn view(state: &GroupState) -> GroupView {
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
