//! Integration tests of the `net` crate: real nodes on loopback TCP, driven only through `Client` and `Event`s.

mod support;

use std::{collections::BTreeSet, time::Duration};

use net::{Error, Event, Refusal, Topic};
use support::{next, serve, spawn_node, within};

#[tokio::test]
async fn two_nodes_dial_request_and_gossip() {
    let mut a = spawn_node(1, |_| {}).await;
    let mut b = spawn_node(2, |_| {}).await;

    let dialed = within(b.client.dial(a.addr.clone()))
        .await
        .expect("dial succeeds");
    assert_eq!(dialed, a.peer_id);
    next(&mut a.events, |event| {
        matches!(event, Event::PeerConnected { peer } if peer == b.peer_id).then_some(())
    })
    .await;

    // Request/response round trip: b asks, a answers.
    let request = tokio::spawn({
        let client = b.client.clone();
        let peer = a.peer_id;
        async move { client.request(peer, b"have?".to_vec()).await }
    });
    let (peer, id, bytes) = next(&mut a.events, |event| match event {
        Event::InboundRequest {
            peer, id, bytes, ..
        } => Some((peer, id, bytes)),
        _ => None,
    })
    .await;
    assert_eq!((peer, bytes.as_slice()), (b.peer_id, &b"have?"[..]));
    within(a.client.respond(id, b"want!".to_vec()))
        .await
        .expect("respond");
    let response = within(request)
        .await
        .expect("task")
        .expect("request succeeds");
    assert_eq!(response, b"want!");
    // Answering twice is an error, not a panic.
    assert!(matches!(
        within(a.client.respond(id, Vec::new())).await,
        Err(Error::UnknownRequest { .. })
    ));

    // Gossip on the heads topic, once b knows a subscribed.
    next(&mut b.events, |event| {
        matches!(event, Event::PeerSubscribed { peer, topic: Topic::Heads } if peer == a.peer_id)
            .then_some(())
    })
    .await;
    within(b.client.publish(Topic::Heads, b"heads-digest".to_vec()))
        .await
        .expect("publish");
    let (peer, origin, bytes) = next(&mut a.events, |event| match event {
        Event::Gossip {
            peer,
            origin,
            topic: Topic::Heads,
            bytes,
        } => Some((peer, origin, bytes)),
        _ => None,
    })
    .await;
    assert_eq!(
        (peer, origin, bytes.as_slice()),
        (b.peer_id, b.peer_id, &b"heads-digest"[..])
    );

    let peers = within(a.client.connected_peers())
        .await
        .expect("connected peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_id, b.peer_id);
    assert!(!peers[0].addrs.is_empty());
    assert!(peers[0].connected_since_ms.is_some());

    within(a.client.shutdown()).await.expect("shutdown");
    assert!(matches!(
        within(a.client.listen_addrs()).await,
        Err(Error::EventLoopStopped)
    ));
}

#[tokio::test]
async fn gossip_crosses_a_line_of_three_nodes() {
    let mut a = spawn_node(11, |_| {}).await;
    let mut b = spawn_node(12, |_| {}).await;
    let mut c = spawn_node(13, |_| {}).await;

    within(a.client.dial(b.addr.clone()))
        .await
        .expect("a dials b");
    within(c.client.dial(b.addr.clone()))
        .await
        .expect("c dials b");
    // b must know both ends subscribed before it forwards between them, and a must know b subscribed.
    let mut subscribed = BTreeSet::new();
    while subscribed.len() < 2 {
        let peer = next(&mut b.events, |event| match event {
            Event::PeerSubscribed {
                peer,
                topic: Topic::Heads,
            } => Some(peer),
            _ => None,
        })
        .await;
        subscribed.insert(peer);
    }
    assert_eq!(subscribed, BTreeSet::from([a.peer_id, c.peer_id]));
    next(&mut a.events, |event| {
        matches!(event, Event::PeerSubscribed { peer, topic: Topic::Heads } if peer == b.peer_id)
            .then_some(())
    })
    .await;

    within(a.client.publish(Topic::Heads, b"from-a".to_vec()))
        .await
        .expect("publish");
    let (peer, origin, bytes) = next(&mut c.events, |event| match event {
        Event::Gossip {
            peer,
            origin,
            topic: Topic::Heads,
            bytes,
        } => Some((peer, origin, bytes)),
        _ => None,
    })
    .await;
    assert_eq!(origin, a.peer_id);
    assert_eq!(bytes, b"from-a");
    // Unless c found a through b's routing table, the message came via b.
    assert!(peer == b.peer_id || peer == a.peer_id);
}

#[tokio::test]
async fn gate_disconnects_non_members_and_hides_their_requests() {
    let mut a = spawn_node(21, |config| {
        config.limits.gate_grace_period_ms = 300;
        config.limits.max_admission_request_bytes = 0;
    })
    .await;
    let mut b = spawn_node(22, |_| {}).await;
    within(a.client.set_members(BTreeSet::from([a.peer_id])))
        .await
        .expect("set members");

    within(b.client.dial(a.addr.clone()))
        .await
        .expect("dial succeeds within the grace period");
    let refused = within(b.client.request(a.peer_id, b"let me in".to_vec())).await;
    assert!(
        matches!(
            refused,
            Err(Error::RequestRefused {
                refusal: Refusal::NotMember,
                ..
            })
        ),
        "unexpected {refused:?}"
    );
    // After the grace period a closes the connection.
    next(&mut b.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
    })
    .await;
    // And a never surfaced the request.
    next(&mut a.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == b.peer_id).then_some(())
    })
    .await;
    while let Ok(event) = a.events.try_recv() {
        assert!(
            !matches!(event, Event::InboundRequest { .. }),
            "non-member request surfaced: {event:?}"
        );
    }
    let counters = within(a.client.counters()).await.expect("counters");
    assert_eq!(counters.requests_refused_not_member, 1);
}

#[tokio::test]
async fn temporary_allowance_lets_an_invitee_request() {
    let a = spawn_node(31, |config| config.limits.gate_grace_period_ms = 300).await;
    let c = spawn_node(33, |_| {}).await;
    within(a.client.set_members(BTreeSet::from([a.peer_id])))
        .await
        .expect("set members");
    within(
        a.client
            .allow_temporarily(c.peer_id, Duration::from_secs(60)),
    )
    .await
    .expect("allow");
    serve(a.client.clone(), a.events, |bytes| {
        [b"welcome ".as_slice(), bytes].concat()
    });

    within(c.client.dial(a.addr.clone())).await.expect("dial");
    let response = within(c.client.request(a.peer_id, b"ticket".to_vec()))
        .await
        .expect("request served");
    assert_eq!(response, b"welcome ticket");
}

#[tokio::test]
async fn oversized_request_is_refused_and_the_node_keeps_serving() {
    let a = spawn_node(41, |config| config.limits.max_sync_message_bytes = 1024).await;
    let b = spawn_node(42, |_| {}).await;
    let a_client = a.client.clone();
    serve(a.client.clone(), a.events, |bytes| bytes.to_vec());
    within(b.client.dial(a.addr.clone())).await.expect("dial");

    let oversized = within(b.client.request(a.peer_id, vec![7; 4096])).await;
    // A body that fits the stream window is read back as a refusal; a larger one is reset mid-write.
    assert!(
        matches!(
            oversized,
            Err(Error::RequestRefused {
                refusal: Refusal::TooLarge,
                ..
            } | Error::Request { .. })
        ),
        "unexpected {oversized:?}"
    );
    // A body far beyond the stream window: a resets the stream rather than buffering it.
    let huge = within(b.client.request(a.peer_id, vec![7; 1024 * 1024])).await;
    assert!(
        matches!(
            huge,
            Err(Error::RequestRefused {
                refusal: Refusal::TooLarge,
                ..
            } | Error::Request { .. })
        ),
        "unexpected {huge:?}"
    );

    let response = within(b.client.request(a.peer_id, b"small".to_vec()))
        .await
        .expect("later request served");
    assert_eq!(response, b"small");
    let counters = within(a_client.counters()).await.expect("counters");
    assert_eq!(counters.frames_invalid, 2);
    assert_eq!(counters.penalties, 2);
    // The sender's own limit is checked before anything is sent.
    let local = within(a_client.request(b.peer_id, vec![0; 2048])).await;
    assert!(
        matches!(
            local,
            Err(Error::MessageTooLarge {
                bytes: 2048,
                limit: 1024
            })
        ),
        "unexpected {local:?}"
    );
}

#[tokio::test]
async fn requests_above_the_rate_limit_are_refused() {
    let a = spawn_node(51, |config| {
        config.limits.max_requests_per_peer_per_second = 1
    })
    .await;
    let b = spawn_node(52, |_| {}).await;
    let a_client = a.client.clone();
    serve(a.client.clone(), a.events, |_| b"ok".to_vec());
    within(b.client.dial(a.addr.clone())).await.expect("dial");

    let requests = (0..4).map(|_| b.client.request(a.peer_id, b"again".to_vec()));
    let results = within(futures::future::join_all(requests)).await;
    let served = results.iter().filter(|result| result.is_ok()).count();
    let limited = results
        .iter()
        .filter(|result| {
            matches!(
                result,
                Err(Error::RequestRefused {
                    refusal: Refusal::RateLimited,
                    ..
                })
            )
        })
        .count();
    assert!(served >= 1, "{results:?}");
    assert!(limited >= 2, "{results:?}");
    assert_eq!(served + limited, 4, "{results:?}");
    let counters = within(a_client.counters()).await.expect("counters");
    assert_eq!(
        counters.requests_refused_rate_limited,
        u64::try_from(limited).expect("small")
    );
}

#[tokio::test]
async fn penalties_lead_to_a_block() {
    let mut a = spawn_node(61, |config| config.limits.penalties_before_block = 2).await;
    let mut b = spawn_node(62, |_| {}).await;
    within(b.client.dial(a.addr.clone())).await.expect("dial");
    next(&mut a.events, |event| {
        matches!(event, Event::PeerConnected { peer } if peer == b.peer_id).then_some(())
    })
    .await;

    within(a.client.penalize(b.peer_id))
        .await
        .expect("penalize");
    within(a.client.penalize(b.peer_id))
        .await
        .expect("penalize");
    next(&mut b.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
    })
    .await;

    // b's handshake may complete before a's block list closes the connection, so the dial itself may succeed;
    // either way a never admits the connection and b is dropped again.
    if within(b.client.dial(a.addr.clone())).await.is_ok() {
        next(&mut b.events, |event| {
            matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
        })
        .await;
    }
    assert!(
        within(a.client.connected_peers())
            .await
            .expect("peers")
            .is_empty()
    );
    while let Ok(event) = a.events.try_recv() {
        assert!(
            !matches!(event, Event::PeerConnected { peer } if peer == b.peer_id),
            "blocked peer admitted: {event:?}"
        );
    }

    within(a.client.unblock(b.peer_id)).await.expect("unblock");
    within(b.client.dial(a.addr.clone()))
        .await
        .expect("dial after unblock");
    next(&mut a.events, |event| {
        matches!(event, Event::PeerConnected { peer } if peer == b.peer_id).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_operator_block_set_partitions_and_heals_without_undoing_penalty_blocks() {
    let mut a = spawn_node(81, |config| config.limits.penalties_before_block = 1).await;
    let mut b = spawn_node(82, |_| {}).await;
    let c = spawn_node(83, |_| {}).await;
    within(b.client.dial(a.addr.clone())).await.expect("dial");
    next(&mut a.events, |event| {
        matches!(event, Event::PeerConnected { peer } if peer == b.peer_id).then_some(())
    })
    .await;

    // Partition: a blocks b; the connection closes at once and neither side can dial the other.
    within(a.client.set_blocked_peers(BTreeSet::from([b.peer_id])))
        .await
        .expect("block set");
    next(&mut b.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
    })
    .await;
    assert!(
        within(a.client.dial(b.addr.clone())).await.is_err(),
        "a dials a peer it blocks"
    );
    if within(b.client.dial(a.addr.clone())).await.is_ok() {
        // The handshake may finish before a's block list refuses the connection; it is closed right away.
        next(&mut b.events, |event| {
            matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
        })
        .await;
    }
    assert!(
        within(a.client.connected_peers())
            .await
            .expect("peers")
            .is_empty()
    );
    // A penalty block of c, and a lifted single block of b, do not end the partition.
    within(a.client.penalize(c.peer_id))
        .await
        .expect("penalize");
    within(a.client.unblock(b.peer_id)).await.expect("unblock");
    assert!(within(a.client.dial(b.addr.clone())).await.is_err());

    // Heal: the set is emptied and a dials b again; c stays blocked by its penalty.
    within(a.client.set_blocked_peers(BTreeSet::new()))
        .await
        .expect("empty block set");
    let dialed = within(a.client.dial(b.addr.clone()))
        .await
        .expect("dial after heal");
    assert_eq!(dialed, b.peer_id);
    assert!(within(a.client.dial(c.addr.clone())).await.is_err());

    let too_many: BTreeSet<_> = (0..=net::MAX_BLOCKED_PEERS)
        .map(|_| net::PeerId::random())
        .collect();
    assert!(matches!(
        within(a.client.set_blocked_peers(too_many)).await,
        Err(Error::TooManyBlockedPeers { .. })
    ));
}

#[tokio::test]
async fn dropping_every_client_ends_the_loop() {
    let node = spawn_node(71, |_| {}).await;
    let mut events = node.events;
    drop(node.client);
    within(async { while events.recv().await.is_some() {} }).await;
}

#[tokio::test]
async fn a_stranger_is_closed_within_a_second_then_backed_off() {
    // The default grace period for strangers: one second.
    let mut a = spawn_node(41, |_| {}).await;
    let mut b = spawn_node(42, |_| {}).await;
    within(a.client.set_members(BTreeSet::from([a.peer_id])))
        .await
        .expect("set members");
    let started = std::time::Instant::now();
    within(b.client.dial(a.addr.clone())).await.expect("dial");
    next(&mut b.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
    })
    .await;
    let open_for = started.elapsed();
    assert!(
        open_for < Duration::from_millis(1_900),
        "a stranger stayed connected for {open_for:?}"
    );
    next(&mut a.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == b.peer_id).then_some(())
    })
    .await;
    // Coming straight back is refused when the connection opens.
    let _ = within(b.client.dial(a.addr.clone())).await;
    within(async {
        while within(a.client.counters())
            .await
            .expect("counters")
            .connections_refused
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let peers = within(a.client.connected_peers()).await.expect("peers");
    assert!(peers.iter().all(|p| p.peer_id != b.peer_id), "{peers:?}");
}

#[tokio::test]
async fn a_redeeming_stranger_outlasts_the_grace_period_until_its_allowance_ends() {
    let mut a = spawn_node(43, |_| {}).await;
    let mut c = spawn_node(44, |_| {}).await;
    within(a.client.set_members(BTreeSet::from([a.peer_id])))
        .await
        .expect("set members");
    within(c.client.dial(a.addr.clone())).await.expect("dial");
    let request = tokio::spawn({
        let client = c.client.clone();
        let peer = a.peer_id;
        async move { client.request(peer, b"redeem".to_vec()).await }
    });
    // The node sees a stranger's small request and lets it stay while it serves it.
    let (peer, id, member) = next(&mut a.events, |event| match event {
        Event::InboundRequest {
            peer, id, member, ..
        } => Some((peer, id, member)),
        _ => None,
    })
    .await;
    assert_eq!((peer, member), (c.peer_id, false));
    within(
        a.client
            .allow_temporarily(c.peer_id, Duration::from_secs(30)),
    )
    .await
    .expect("allow");
    within(a.client.respond(id, b"welcome".to_vec()))
        .await
        .expect("respond");
    assert_eq!(
        within(request).await.expect("task").expect("served"),
        b"welcome"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let peers = within(a.client.connected_peers()).await.expect("peers");
    assert!(
        peers.iter().any(|p| p.peer_id == c.peer_id),
        "the redeeming stranger was closed: {peers:?}"
    );
    // A refused admission ends the allowance: the stranger is closed soon after.
    let ended = std::time::Instant::now();
    within(a.client.end_allowance(c.peer_id))
        .await
        .expect("end allowance");
    next(&mut c.events, |event| {
        matches!(event, Event::PeerDisconnected { peer } if peer == a.peer_id).then_some(())
    })
    .await;
    assert!(ended.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn strangers_cannot_take_the_connections_reserved_for_members() {
    let mut a = spawn_node(45, |config| {
        // Strangers stay long enough to hold their slot during the test.
        config.limits.gate_grace_period_ms = 60_000;
        config.limits.max_non_member_connections = 1;
    })
    .await;
    let member = spawn_node(46, |_| {}).await;
    let first = spawn_node(47, |_| {}).await;
    let second = spawn_node(48, |_| {}).await;
    within(
        a.client
            .set_members(BTreeSet::from([a.peer_id, member.peer_id])),
    )
    .await
    .expect("set members");
    within(first.client.dial(a.addr.clone()))
        .await
        .expect("the first stranger gets the one non-member slot");
    next(&mut a.events, |event| {
        matches!(event, Event::PeerConnected { peer } if peer == first.peer_id).then_some(())
    })
    .await;
    let _ = within(second.client.dial(a.addr.clone())).await;
    within(async {
        while within(a.client.counters())
            .await
            .expect("counters")
            .connections_refused
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // A member still gets in.
    within(member.client.dial(a.addr.clone()))
        .await
        .expect("member dial");
    next(&mut a.events, |event| {
        matches!(event, Event::PeerConnected { peer } if peer == member.peer_id).then_some(())
    })
    .await;
    let peers = within(a.client.connected_peers()).await.expect("peers");
    let ids: Vec<_> = peers.iter().map(|p| p.peer_id).collect();
    assert!(ids.contains(&member.peer_id), "{ids:?}");
    assert!(ids.contains(&first.peer_id), "{ids:?}");
    assert!(!ids.contains(&second.peer_id), "{ids:?}");
}
