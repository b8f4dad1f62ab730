//! The tables of the store file, their keys, and the number of their layout.

use redb::TableDefinition;

/// The layout of the tables below. A file with another number is refused, never misread.
///
/// 1: records without checksums (upgraded on open, see [`super::RedbBackend::open`]).
/// 2: every record ends with its CRC32C ([`crate::broker::store::encoding`]).
pub const STORE_FORMAT: u32 = 2;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("sharq_meta");
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(super) const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
pub(super) const INFLIGHT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inflight");
pub(super) const INCOMING: TableDefinition<(&str, u16), u8> = TableDefinition::new("incoming_qos2");
/// Row count and whole-message bytes per queue, kept with every commit.
pub(super) const QUEUES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queues");
pub(super) const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// Groups declared at run time (the admin API's), by owner; config-declared ones are not here.
pub(super) const DECLARED: TableDefinition<&str, u8> = TableDefinition::new("declared_groups");
/// Records that failed their checksum or layout when read, moved here byte for byte (by table,
/// queue or client or topic, and copy id): never read as data, kept for inspection.
pub(super) const DAMAGED: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("damaged_records");

pub(super) const FORMAT_KEY: &str = "format";
pub(super) const LAST_COMMIT_KEY: &str = "last_commit_ms";
pub(super) const NEXT_ID_KEY: &str = "next_id";
