//! DIMSE command sets (PS3.7 §9, §10): group 0000 in Implicit VR Little
//! Endian, read into a small map and written with their group length. Only
//! what the node sends and answers: C-ECHO, C-STORE, N-ACTION and
//! N-EVENT-REPORT.

use std::collections::BTreeMap;

/// C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
/// C-STORE-RSP.
pub const C_STORE_RSP: u16 = 0x8001;
/// C-ECHO-RQ.
pub const C_ECHO_RQ: u16 = 0x0030;
/// C-ECHO-RSP.
pub const C_ECHO_RSP: u16 = 0x8030;
/// N-EVENT-REPORT-RQ.
pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
/// N-EVENT-REPORT-RSP.
pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
/// N-ACTION-RQ.
pub const N_ACTION_RQ: u16 = 0x0130;
/// N-ACTION-RSP.
pub const N_ACTION_RSP: u16 = 0x8130;
/// CommandDataSetType: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

/// Success.
pub const STATUS_SUCCESS: u16 = 0x0000;
/// Refused: out of resources (a full disk).
pub const STATUS_OUT_OF_RESOURCES: u16 = 0xA700;
/// Error: data set does not match SOP class.
pub const STATUS_DATASET_MISMATCH: u16 = 0xA900;
/// Error: cannot understand.
pub const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;
/// Refused: SOP class not supported.
pub const STATUS_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// Processing failure.
pub const STATUS_PROCESSING_FAILURE: u16 = 0x0110;
/// Refused: not authorised (a caller known only as a commitment PACS sending images).
pub const STATUS_NOT_AUTHORIZED: u16 = 0x0124;

/// Affected SOP Class UID.
pub const AFFECTED_SOP_CLASS: u16 = 0x0002;
/// Requested SOP Class UID.
pub const REQUESTED_SOP_CLASS: u16 = 0x0003;
/// Command Field.
pub const COMMAND_FIELD: u16 = 0x0100;
/// Message ID.
pub const MESSAGE_ID: u16 = 0x0110;
/// Message ID Being Responded To.
pub const MESSAGE_ID_RESPONDED: u16 = 0x0120;
/// Priority.
pub const PRIORITY: u16 = 0x0700;
/// Command Data Set Type.
pub const DATA_SET_TYPE: u16 = 0x0800;
/// Status.
pub const STATUS: u16 = 0x0900;
/// Affected SOP Instance UID.
pub const AFFECTED_SOP_INSTANCE: u16 = 0x1000;
/// Requested SOP Instance UID.
pub const REQUESTED_SOP_INSTANCE: u16 = 0x1001;
/// Action Type ID.
pub const ACTION_TYPE_ID: u16 = 0x1008;
/// Event Type ID.
pub const EVENT_TYPE_ID: u16 = 0x1002;

/// A command set: group-0000 element number → value bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandSet(pub BTreeMap<u16, Vec<u8>>);

/// A command set that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("malformed DIMSE command set: {0}")]
pub struct CommandError(pub &'static str);

/// Most bytes of a command set this node reads (commands are a few hundred).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

impl CommandSet {
    /// Reads Implicit VR Little Endian group-0000 elements.
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(CommandError("longer than 64 KiB"));
        }
        let mut map = BTreeMap::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let head = bytes.get(at..at + 8).ok_or(CommandError("truncated element header"))?;
            let group = u16::from_le_bytes([head[0], head[1]]);
            let elem = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if group != 0 {
                return Err(CommandError("an element outside group 0000"));
            }
            let value = bytes.get(at + 8..at + 8 + len).ok_or(CommandError("a value past the end"))?;
            map.insert(elem, value.to_vec());
            at += 8 + len;
        }
        Ok(Self(map))
    }

    /// A US value.
    pub fn u16(&self, elem: u16) -> Option<u16> {
        let v = self.0.get(&elem)?;
        Some(u16::from_le_bytes([*v.first()?, *v.get(1)?]))
    }

    /// A UI value without its padding.
    pub fn uid(&self, elem: u16) -> Option<String> {
        let v = self.0.get(&elem)?;
        let s = std::str::from_utf8(v).ok()?;
        Some(s.trim_end_matches(['\0', ' ']).to_string())
    }

    /// Sets a US value.
    pub fn set_u16(mut self, elem: u16, v: u16) -> Self {
        self.0.insert(elem, v.to_le_bytes().to_vec());
        self
    }

    /// Sets a UI value (padded to even length with NUL).
    pub fn set_uid(mut self, elem: u16, v: &str) -> Self {
        let mut b = v.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(0);
        }
        self.0.insert(elem, b);
        self
    }

    /// The bytes: (0000,0000) group length first, then the elements in order.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (elem, v) in self.0.iter().filter(|(e, _)| **e != 0) {
            body.extend_from_slice(&0u16.to_le_bytes());
            body.extend_from_slice(&elem.to_le_bytes());
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// A response to `rq` (same SOP class and instance, no data set).
pub fn response(rq: &CommandSet, field: u16, status: u16) -> CommandSet {
    let mut c = CommandSet::default()
        .set_u16(COMMAND_FIELD, field)
        .set_u16(MESSAGE_ID_RESPONDED, rq.u16(MESSAGE_ID).unwrap_or(0))
        .set_u16(DATA_SET_TYPE, NO_DATA_SET)
        .set_u16(STATUS, status);
    if let Some(v) = rq.0.get(&AFFECTED_SOP_CLASS).or(rq.0.get(&REQUESTED_SOP_CLASS)) {
        c.0.insert(AFFECTED_SOP_CLASS, v.clone());
    }
    if let Some(v) = rq.0.get(&AFFECTED_SOP_INSTANCE).or(rq.0.get(&REQUESTED_SOP_INSTANCE)) {
        c.0.insert(AFFECTED_SOP_INSTANCE, v.clone());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reads_back_and_carries_its_group_length() {
        let c = CommandSet::default()
            .set_uid(AFFECTED_SOP_CLASS, "1.2.840.10008.5.1.4.1.1.2")
            .set_u16(COMMAND_FIELD, C_STORE_RQ)
            .set_u16(MESSAGE_ID, 7);
        let b = c.encode();
        let back = CommandSet::parse(&b).expect("parses");
        assert_eq!(back.u16(COMMAND_FIELD), Some(C_STORE_RQ));
        assert_eq!(back.uid(AFFECTED_SOP_CLASS).as_deref(), Some("1.2.840.10008.5.1.4.1.1.2"));
        let len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
        assert_eq!(len, b.len() - 12);
        let r = response(&back, C_STORE_RSP, STATUS_OUT_OF_RESOURCES);
        assert_eq!(r.u16(MESSAGE_ID_RESPONDED), Some(7));
        assert_eq!(r.u16(STATUS), Some(0xA700));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let b = CommandSet::default().set_u16(COMMAND_FIELD, 1).encode();
        assert!(CommandSet::parse(&b[..b.len() - 1]).is_err());
        assert!(CommandSet::parse(&[8, 0, 0x20, 0, 2, 0, 0, 0, 1, 2]).is_err());
        assert!(CommandSet::parse(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
