//! Contract `sharq:dispatch@0.1.0` (`wit/sharq-dispatch.wit`): the first version. No imports;
//! `msg-meta` has no `key-hash`, members no user properties, and `select-full` takes the
//! topic, publisher and payload as separate arguments.

use wasmtime::Store;

use super::contract::{payload_len, Asked, Contract, GuestApi, LinkedContract};
use super::GuestState;
use crate::strategy::{MemberInfo, MemberLoad, MessageView, Needs};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "strategy",
    });
}

use bindings::exports::sharq::dispatch::select_member as guest;

pub(super) const CONTRACT: Contract = Contract {
    version: "0.1.0",
    // It offers guests nothing.
    add_imports: |_| Ok(()),
    imports_stage: "link",
    link: |instance_pre| {
        let pre = bindings::StrategyPre::new(instance_pre)?;
        Ok(Box::new(Linked(pre)))
    },
};

struct Linked(bindings::StrategyPre<GuestState>);

impl LinkedContract for Linked {
    fn version(&self) -> &'static str {
        CONTRACT.version
    }

    fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Box<dyn GuestApi>> {
        Ok(Box::new(Instance(self.0.instantiate(store)?)))
    }
}

struct Instance(bindings::Strategy);

impl Instance {
    fn exports(&self) -> &guest::Guest {
        self.0.sharq_dispatch_select_member()
    }
}

impl GuestApi for Instance {
    fn init(
        &self,
        store: &mut Store<GuestState>,
        group: &str,
        params: &[(String, String)],
    ) -> wasmtime::Result<Result<Needs, String>> {
        let answer = self.exports().call_init(store, group, params)?;
        Ok(answer.map(|needs| Needs {
            topic: needs.contains(guest::Needs::TOPIC),
            publisher: needs.contains(guest::Needs::PUBLISHER),
            payload: needs.contains(guest::Needs::PAYLOAD),
            ..Needs::default()
        }))
    }

    fn member_joined(
        &self,
        store: &mut Store<GuestState>,
        member: &MemberInfo,
    ) -> wasmtime::Result<()> {
        let member = guest::Member {
            id: member.id,
            client_id: member.client_id.to_string(),
            weight: member.weight,
            subscribed_at_ms: member.subscribed_at_ms,
        };
        self.exports().call_member_joined(store, &member)
    }

    fn member_left(&self, store: &mut Store<GuestState>, id: u64) -> wasmtime::Result<()> {
        self.exports().call_member_left(store, id)
    }

    fn member_load(
        &self,
        store: &mut Store<GuestState>,
        id: u64,
        load: MemberLoad,
    ) -> wasmtime::Result<()> {
        self.exports()
            .call_member_load(store, id, load.inflight, load.capacity, load.online)
    }

    fn select(
        &self,
        store: &mut Store<GuestState>,
        message: &MessageView<'_>,
        needs: Needs,
    ) -> wasmtime::Result<Option<u64>> {
        let meta = guest::MsgMeta {
            topic_hash: message.topic_hash,
            publisher_hash: message.publisher_hash,
            qos: message.qos,
            retain: message.retain,
            payload_len: payload_len(message),
        };
        if needs.any() {
            let asked = Asked::of(message, needs);
            self.exports().call_select_full(
                store,
                asked.topic,
                asked.publisher,
                asked.payload,
                meta,
            )
        } else {
            self.exports().call_select(store, meta)
        }
    }
}
