//! The sans-IO sync protocol between in-memory replicas: pulls converge, and only missing changes cross.

use std::collections::HashMap;

use identity::Keypair;
use model::{Learning, Member, Role};
use registry::sync::{Announcement, Request, Response, Syncer};
use registry::{ChangeHash, Envelope, Op, Replica};

struct Peer {
    key: Keypair,
    replica: Replica,
    envelopes: HashMap<ChangeHash, Envelope>,
}

impl Peer {
    fn write(&mut self, op: &Op) {
        let envelope = self
            .replica
            .write(&self.key, op, 1_700_000_000_000)
            .expect("write allowed");
        self.envelopes.insert(envelope.hash(), envelope);
    }
}

fn member(key: &Keypair, role: Role, scope: &str) -> Member {
    Member {
        public_key: key.public().to_hex(),
        name: scope.into(),
        role,
        scope: Some(scope.into()),
        admitted_by: String::new(),
        admitted_at_ms: 0,
        revoked: false,
    }
}

fn learning(id: &str) -> Op {
    Op::AddLearning(Learning {
        id: id.into(),
        title: format!("learning {id}"),
        body: "what we learnt".into(),
        outcome: None,
        tags: vec![],
        experiment: None,
        source: String::new(),
        author: String::new(),
        created_at_ms: 0,
    })
}

/// Runs one pull from `to` against `from` until it ends; returns (envelopes transferred, round trips).
fn pull(puller: &mut Peer, server: &Peer, syncer: &mut Syncer<u8>) -> (usize, usize) {
    let announcement =
        Announcement::decode(&server.replica.announcement().expect("federated").encode())
            .expect("decodes");
    let mut request = syncer.on_announcement(1, &announcement, &puller.replica, 0);
    let (mut transferred, mut rounds) = (0, 0);
    while let Some(r) = request {
        rounds += 1;
        let r = Request::decode(&r.encode()).expect("request decodes");
        let response = server.replica.sync_response(&r, &server.envelopes);
        let response = Response::decode(&response.encode()).expect("response decodes");
        transferred += response.envelopes.len();
        let receipt = puller
            .replica
            .receive(response.envelopes.clone())
            .expect("federated");
        for envelope in &receipt.accepted {
            puller.envelopes.insert(envelope.hash(), envelope.clone());
        }
        request = syncer.on_response(
            &1,
            &response,
            receipt.accepted.len(),
            receipt.rejected.len(),
            &puller.replica,
            0,
        );
    }
    (transferred, rounds)
}

#[test]
fn pulls_converge_and_send_only_missing_changes() {
    let council_key = Keypair::from_seed([1; 32]);
    let mut council = Peer {
        key: council_key,
        replica: Replica::new(),
        envelopes: HashMap::new(),
    };
    let founder = member(&council.key, Role::Council, "council");
    council.write(&Op::Genesis {
        name: "test".into(),
        founder,
    });
    let mut pods: Vec<Peer> = (0..2)
        .map(|i| Peer {
            key: Keypair::from_seed([10 + i; 32]),
            replica: Replica::new(),
            envelopes: HashMap::new(),
        })
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        let op = Op::AddMember(member(&pod.key, Role::Pod, &format!("pod{i}")));
        council.write(&op);
    }
    let federation = council.replica.federation().expect("founded");
    for pod in &mut pods {
        pod.replica.adopt(federation).expect("adopt");
        let (moved, _) = pull(pod, &council, &mut Syncer::new());
        assert_eq!(moved, 3);
    }
    for (i, pod) in pods.iter_mut().enumerate() {
        for n in 0..50 {
            pod.write(&learning(&format!("l{i}-{n}")));
        }
    }
    let (second, first) = {
        let (a, b) = pods.split_at_mut(1);
        (&mut a[0], &b[0])
    };
    let (moved, rounds) = pull(second, first, &mut Syncer::new());
    assert_eq!(moved, 50, "exactly the 50 missing changes cross");
    assert!(rounds <= 2, "{rounds} round trips");
    let server = pods[0].replica_clone_peer();
    let (moved, _) = pull(&mut pods[1], &server, &mut Syncer::new());
    assert_eq!(moved, 50);
    assert_eq!(pods[0].replica.heads(), pods[1].replica.heads());
    let server = pods[0].replica_clone_peer();
    let (moved, _) = pull(&mut pods[1], &server, &mut Syncer::new());
    assert_eq!(moved, 0, "nothing crosses once converged");
}

impl Peer {
    /// A second peer holding the same accepted envelopes (to pull from while `self` is borrowed mutably).
    fn replica_clone_peer(&self) -> Peer {
        let mut replica = Replica::new();
        replica
            .adopt(self.replica.federation().expect("federated"))
            .expect("adopt");
        let mut envelopes: Vec<Envelope> = self.envelopes.values().cloned().collect();
        envelopes.sort_by_key(Envelope::hash);
        let receipt = replica.receive(envelopes).expect("federated");
        assert!(receipt.rejected.is_empty(), "{:?}", receipt.rejected);
        Peer {
            key: Keypair::from_seed([99; 32]),
            replica,
            envelopes: self.envelopes.clone(),
        }
    }
}
