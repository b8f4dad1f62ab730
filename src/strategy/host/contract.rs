//! What the host asks of one version of the `sharq:dispatch` contract (`wit/`). Each version's
//! bindings and the adapters from the host's types to them live in a file of their own
//! (`v0_1.rs`, `v0_2.rs`); everything else in the host is the same for all versions and talks
//! to a component only through [`LinkedContract`] and [`GuestApi`].
//!
//! A new contract version is a new file implementing both traits, and one line in
//! [`CONTRACTS`].

use bytestring::ByteString;
use wasmtime::component::{InstancePre, Linker};
use wasmtime::Store;

use super::{v0_1, v0_2, GuestState};
use crate::strategy::{MemberInfo, MemberLoad, MessageView, Needs};

/// The contract versions the host speaks, newest first: a component is linked as the first of
/// these it exports, so one exporting several is spoken to in the newest.
pub(super) const CONTRACTS: &[Contract] = &[v0_2::CONTRACT, v0_1::CONTRACT];

/// One contract version, as the host links it.
pub(super) struct Contract {
    /// As in the WIT package, `0.2.0`; `sharq plugin check` reports it.
    pub version: &'static str,
    /// Adds the host functions this version offers its guests. Offered to every component
    /// whichever version it exports: one that does not import them never sees them.
    pub add_imports: fn(&mut Linker<GuestState>) -> wasmtime::Result<()>,
    /// What adding them was, for the error when it fails.
    pub imports_stage: &'static str,
    /// Links a component against this version; an error when it does not export it.
    pub link: fn(InstancePre<GuestState>) -> wasmtime::Result<Box<dyn LinkedContract>>,
}

/// A component linked against one contract version: instantiating it is the expensive half of
/// making a group's instance.
pub(super) trait LinkedContract: Send + Sync {
    fn version(&self) -> &'static str;

    fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Box<dyn GuestApi>>;
}

/// The `select-member` exports of one live instance, in the host's types. The outer error is a
/// trap or a timeout; what the guest answered is inside.
pub(super) trait GuestApi: Send + Sync {
    /// `Err` inside: the guest refused its params, with its message.
    fn init(
        &self,
        store: &mut Store<GuestState>,
        group: &str,
        params: &[(String, String)],
    ) -> wasmtime::Result<Result<Needs, String>>;

    fn member_joined(
        &self,
        store: &mut Store<GuestState>,
        member: &MemberInfo,
    ) -> wasmtime::Result<()>;

    fn member_left(&self, store: &mut Store<GuestState>, id: u64) -> wasmtime::Result<()>;

    fn member_load(
        &self,
        store: &mut Store<GuestState>,
        id: u64,
        load: MemberLoad,
    ) -> wasmtime::Result<()>;

    /// Calls `select-full` with what `needs` asks for when it asks for anything beyond the flat
    /// metadata, else `select`, so the common path copies no strings into the guest.
    fn select(
        &self,
        store: &mut Store<GuestState>,
        message: &MessageView<'_>,
        needs: Needs,
    ) -> wasmtime::Result<Option<u64>>;
}

/// Links `instance_pre` as the newest contract version it exports. The error, when it exports
/// none, is the oldest version's.
pub(super) fn link(
    instance_pre: &InstancePre<GuestState>,
) -> wasmtime::Result<Box<dyn LinkedContract>> {
    let mut refusal = None;
    for contract in CONTRACTS {
        match (contract.link)(instance_pre.clone()) {
            Ok(linked) => return Ok(linked),
            Err(e) => refusal = Some(e),
        }
    }
    Err(refusal.unwrap_or_else(|| wasmtime::format_err!("the host knows no contract version")))
}

/// What a failed [`link`] was trying: names every version the host speaks, oldest first.
pub(super) fn link_stage() -> &'static str {
    static STAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let versions: Vec<String> = CONTRACTS
            .iter()
            .rev()
            .map(|contract| contract.version.to_owned())
            .collect();
        format!(
            "link (does it implement the `strategy` world of sharq:dispatch@{}?)",
            versions.join(" or @")
        )
    });
    &STAGE
}

/// The message's fields `select-full` passes, those `init` did not ask for left empty.
pub(super) struct Asked<'a> {
    pub topic: &'a str,
    pub publisher: &'a str,
    pub payload: Option<&'a [u8]>,
    pub user_properties: &'a [(ByteString, ByteString)],
    pub content_type: Option<&'a str>,
}

impl<'a> Asked<'a> {
    pub fn of(message: &MessageView<'a>, needs: Needs) -> Asked<'a> {
        Asked {
            topic: if needs.topic { message.topic } else { "" },
            publisher: if needs.publisher {
                message.publisher
            } else {
                ""
            },
            payload: needs.payload.then_some(message.payload),
            user_properties: if needs.user_properties {
                message.user_properties
            } else {
                &[]
            },
            content_type: message.content_type.filter(|_| needs.content_type),
        }
    }
}

/// The payload's length as `msg-meta` carries it, saturated.
pub(super) fn payload_len(message: &MessageView<'_>) -> u32 {
    u32::try_from(message.payload.len()).unwrap_or(u32::MAX)
}

/// Key-value pairs as WIT lists of string tuples want them.
pub(super) fn owned_pairs(pairs: &[(ByteString, ByteString)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_link_failure_names_every_version_oldest_first() {
        assert_eq!(
            super::link_stage(),
            "link (does it implement the `strategy` world of sharq:dispatch@0.1.0 or @0.2.0?)"
        );
    }
}
