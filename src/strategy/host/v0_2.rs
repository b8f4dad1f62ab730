//! Contract `sharq:dispatch@0.2.0` (`wit/0.2.0/`): adds the message's ordering key to
//! `msg-meta`, the SUBSCRIBE's user properties to a member, user properties and content type
//! to what `select-full` may ask for, and the `log` import. Linked in its world with `log`
//! (`strategy-with-log`): a component of world `strategy` (no imports) links against it just
//! as well.

use wasmtime::component::HasSelf;
use wasmtime::Store;

use super::contract::{owned_pairs, payload_len, Asked, Contract, GuestApi, LinkedContract};
use super::GuestState;
use crate::strategy::plugin_log::PluginLevel;
use crate::strategy::{MemberInfo, MemberLoad, MessageView, Needs};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/0.2.0",
        world: "strategy-with-log",
    });
}

use bindings::exports::sharq::dispatch::select_member as guest;
use bindings::sharq::dispatch::log;

pub(super) const CONTRACT: Contract = Contract {
    version: "0.2.0",
    add_imports: |linker| {
        log::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)
    },
    imports_stage: "link the log import",
    link: |instance_pre| {
        let pre = bindings::StrategyWithLogPre::new(instance_pre)?;
        Ok(Box::new(Linked(pre)))
    },
};

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Error => PluginLevel::Error,
            log::Level::Warn => PluginLevel::Warn,
            log::Level::Info => PluginLevel::Info,
            log::Level::Debug => PluginLevel::Debug,
            log::Level::Trace => PluginLevel::Trace,
        };
        self.log.write(level, &message);
    }
}

struct Linked(bindings::StrategyWithLogPre<GuestState>);

impl LinkedContract for Linked {
    fn version(&self) -> &'static str {
        CONTRACT.version
    }

    fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Box<dyn GuestApi>> {
        Ok(Box::new(Instance(self.0.instantiate(store)?)))
    }
}

struct Instance(bindings::StrategyWithLog);

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
            user_properties: needs.contains(guest::Needs::USER_PROPERTIES),
            content_type: needs.contains(guest::Needs::CONTENT_TYPE),
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
            user_properties: owned_pairs(&member.user_properties),
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
            key_hash: message.key_hash,
        };
        if needs.any() {
            let asked = Asked::of(message, needs);
            let full = guest::Message {
                topic: asked.topic.to_owned(),
                publisher: asked.publisher.to_owned(),
                payload: asked.payload.map(<[u8]>::to_vec),
                user_properties: owned_pairs(asked.user_properties),
                content_type: asked.content_type.map(str::to_owned),
            };
            self.exports().call_select_full(store, &full, meta)
        } else {
            self.exports().call_select(store, meta)
        }
    }
}
