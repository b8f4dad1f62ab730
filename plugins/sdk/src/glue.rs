//! What the export macros drive: one interface over an author's [`Managed`] strategy and a
//! contract-level type (the built-ins), so one macro body serves both.

use crate::{Contract, Managed, Member, MemberId, Message, MsgMeta, Needs, Strategy};

#[doc(hidden)]
pub trait Glue: Default {
    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String>;
    fn member_joined(&mut self, member: Member);
    fn member_left(&mut self, id: MemberId);
    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool);
    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId>;
    fn select_message(&mut self, message: &Message<'_>) -> Option<MemberId>;
}

impl<S: Strategy> Glue for Managed<S> {
    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        Managed::init(self, group, params)
    }

    fn member_joined(&mut self, member: Member) {
        Managed::member_joined(self, member)
    }

    fn member_left(&mut self, id: MemberId) {
        Managed::member_left(self, id)
    }

    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        Managed::member_load(self, id, inflight, capacity, online)
    }

    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        Managed::select(self, meta)
    }

    fn select_message(&mut self, message: &Message<'_>) -> Option<MemberId> {
        Managed::select_message(self, message)
    }
}

/// A type written against the WIT-mirroring [`Contract`] trait.
#[doc(hidden)]
#[derive(Default)]
pub struct ContractGlue<C>(pub C);

impl<C: Contract + Default> Glue for ContractGlue<C> {
    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        // Swap a fresh instance in only on success: on `err` the host keeps this one.
        let mut fresh = C::default();
        let needs = fresh.init(group, params)?;
        self.0 = fresh;
        Ok(needs)
    }

    fn member_joined(&mut self, member: Member) {
        self.0.member_joined(sharq_strategies::Member {
            id: member.id,
            client_id: member.client_id,
            weight: member.weight,
            subscribed_at_ms: member.subscribed_at_ms,
        })
    }

    fn member_left(&mut self, id: MemberId) {
        self.0.member_left(id)
    }

    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
        self.0.member_load(id, inflight, capacity, online)
    }

    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        self.0.select(meta)
    }

    fn select_message(&mut self, m: &Message<'_>) -> Option<MemberId> {
        self.0.select_full(m.topic, m.publisher, m.payload, &m.meta)
    }
}
