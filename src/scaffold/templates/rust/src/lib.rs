//! {{name}}: a sharq dispatch strategy in Rust, on sharq-sdk.
//!
//! - A message whose PUBLISH has the user property `tenant` goes to the candidate that wins
//!   rendezvous hashing for the tenant. One tenant's messages stick to one member, and a member
//!   joining or leaving moves only the tenants it wins or loses.
//! - A message without `tenant` goes round robin over the candidates.
//! - Candidates: the online members with room in their window; when none has room, every
//!   online member. With none online we decline and the broker's own round robin decides.

use sharq_sdk::{Init, MemberId, Members, Message, Needs, RoundRobin, Strategy};

/// One value serves one group; the SDK keeps the members and calls `select` per message.
#[derive(Default)]
struct ByTenant {
    round_robin: RoundRobin,
}

impl Strategy for ByTenant {
    fn init(&mut self, _init: &Init) -> Result<Needs, String> {
        // We accept any params; an `Err("why")` refuses a configuration. Only the user
        // properties: the broker then copies no topic or payload into us.
        Ok(Needs::USER_PROPERTIES)
    }

    fn select(&mut self, members: &Members, msg: &Message) -> Option<MemberId> {
        match msg.user_property("tenant") {
            Some(tenant) => members.rendezvous(sharq_sdk::hash_bytes(tenant.as_bytes())),
            None => self.round_robin.next(members),
        }
    }
}

sharq_sdk::export_strategy!(ByTenant);
