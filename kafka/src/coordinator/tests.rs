//! The group coordinator's rules through its public calls: commits across
//! generations, rejoins, first joins asked for their id, groups forming
//! together, static members restarting, dropped joins and forgotten groups.

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
