//! Storage Commitment, push model (PS3.4 Annex J), as the SCU: after a
//! study's results were stored by a `storage_commitment = true`
//! destination, an N-ACTION-RQ (action type 1) asks the PACS to commit
//! them (the well-known SOP instance, a Transaction UID, the Referenced SOP
//! Sequence of the results). The PACS answers with an N-EVENT-REPORT-RQ
//! (event type 1: all committed; 2: some failed) either on the same
//! association, which [`request`] waits for a moment, or on an association
//! of its own to this node's SCP (`scp.rs`, which accepts the Storage
//! Commitment SOP class with the PACS as SCP by role selection). Both hand
//! the [`Report`] to the outbox (`outbox.rs`), which records it in the
//! journal before the N-EVENT-REPORT-RSP goes out.
//!
//! Transaction UIDs are random `2.25.` UIDs (no patient data), stored on
//! the outbox rows before the N-ACTION is sent, so a report that arrives
//! after a restart still finds its rows.

use std::io::Write;
use std::time::Duration;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::Pdu;
use dicom_ul::pdu::{PDataValue, PDataValueType};

use super::dimse::{self, CommandSet};
use super::scu::assoc_text;
use crate::config::Destination;
use crate::export::dicom_refs::{item, seq, text};

/// Storage Commitment Push Model SOP Class.
pub const STORAGE_COMMITMENT: &str = "1.2.840.10008.1.20.1";
/// Its well-known SOP Instance.
pub const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
/// N-ACTION action type: Request Storage Commitment.
pub const ACTION_REQUEST: u16 = 1;
/// N-EVENT-REPORT event type: all committed.
pub const EVENT_SUCCESS: u16 = 1;
/// N-EVENT-REPORT event type: failures exist.
pub const EVENT_FAILURES: u16 = 2;
/// How long [`request`] waits for a report on its own association.
pub const SAME_ASSOCIATION_WAIT: Duration = Duration::from_secs(3);
/// Most bytes of a report's data set this node reads.
pub const MAX_REPORT_BYTES: usize = 16 * 1024 * 1024;

/// A storage commitment result (an N-EVENT-REPORT's data set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The Transaction UID of the request it answers.
    pub transaction: String,
    /// 1 (all committed) or 2 (failures exist).
    pub event_type: u16,
    /// (SOP Class UID, SOP Instance UID) the PACS committed.
    pub committed: Vec<(String, String)>,
    /// (SOP Class UID, SOP Instance UID, Failure Reason) it did not.
    pub failed: Vec<(String, String, u16)>,
}

/// The N-ACTION-RQ's data set: the Transaction UID and the Referenced SOP Sequence.
pub fn request_dataset(transaction: &str, refs: &[(String, String)]) -> InMemDicomObject {
    use dicom_core::VR;
    let items = refs
        .iter()
        .map(|(class, instance)| {
            item(vec![
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
            ])
        })
        .collect();
    item(vec![text(tags::TRANSACTION_UID, VR::UI, transaction), seq(tags::REFERENCED_SOP_SEQUENCE, items)])
}

fn uid_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.element(tag).ok()?.to_str().ok()?;
    let v = v.trim_end_matches(['\0', ' ']).to_string();
    (!v.is_empty()).then_some(v)
}

/// Reads an N-EVENT-REPORT's data set (`event_type` from its command).
pub fn parse_report(event_type: u16, data: &[u8], transfer_syntax: &str) -> Result<Report, String> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| format!("the report's transfer syntax {transfer_syntax} is not known"))?;
    let obj = InMemDicomObject::read_dataset_with_ts(data, ts)
        .map_err(|e| format!("the report's data set cannot be read: {e}"))?;
    let transaction = uid_of(&obj, tags::TRANSACTION_UID).ok_or("the report has no Transaction UID")?;
    let items = |t: Tag| -> Vec<InMemDicomObject> {
        obj.element(t).ok().and_then(|e| e.items().map(<[_]>::to_vec)).unwrap_or_default()
    };
    let mut r = Report { transaction, event_type, ..Report::default() };
    for i in items(tags::REFERENCED_SOP_SEQUENCE) {
        if let (Some(c), Some(s)) =
            (uid_of(&i, tags::REFERENCED_SOP_CLASS_UID), uid_of(&i, tags::REFERENCED_SOP_INSTANCE_UID))
        {
            r.committed.push((c, s));
        }
    }
    for i in items(tags::FAILED_SOP_SEQUENCE) {
        let Some(s) = uid_of(&i, tags::REFERENCED_SOP_INSTANCE_UID) else { continue };
        let c = uid_of(&i, tags::REFERENCED_SOP_CLASS_UID).unwrap_or_default();
        let reason = i.element(tags::FAILURE_REASON).ok().and_then(|e| e.to_int::<u16>().ok()).unwrap_or(0x0110);
        r.failed.push((c, s, reason));
    }
    Ok(r)
}

/// A failure reason (PS3.3 C.14.1.1) in words.
pub fn failure_text(reason: u16) -> String {
    match reason {
        0x0110 => "processing failure".into(),
        0x0112 => "no such object instance".into(),
        0x0213 => "resource limitation".into(),
        0x0122 => "referenced SOP class not supported".into(),
        0x0119 => "class/instance conflict".into(),
        0x0131 => "duplicate transaction UID".into(),
        other => format!("failure reason {other:04X}H"),
    }
}

/// A whole DIMSE message: (presentation context, command, data set if any).
type Message = (u8, CommandSet, Option<Vec<u8>>);

/// Reads PDUs until a command and, when it announces one, its data set have arrived.
fn receive_message<S>(assoc: &mut dicom_ul::ClientAssociation<S>) -> Result<Message, String>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let mut command = Vec::new();
    let mut parsed: Option<(u8, CommandSet)> = None;
    let mut data = Vec::new();
    loop {
        match assoc.receive().map_err(|e| assoc_text(&e))? {
            Pdu::PData { data: values } => {
                for v in values {
                    match (v.value_type, &parsed) {
                        (PDataValueType::Command, None) => {
                            if command.len() + v.data.len() > dimse::MAX_COMMAND_BYTES {
                                return Err("a command over 64 KiB".into());
                            }
                            command.extend_from_slice(&v.data);
                            if v.is_last {
                                let c = CommandSet::parse(&command).map_err(|e| e.to_string())?;
                                if c.u16(dimse::DATA_SET_TYPE) == Some(dimse::NO_DATA_SET) {
                                    return Ok((v.presentation_context_id, c, None));
                                }
                                parsed = Some((v.presentation_context_id, c));
                            }
                        }
                        (PDataValueType::Data, Some(_)) => {
                            if data.len() + v.data.len() > MAX_REPORT_BYTES {
                                return Err("a data set over 16 MiB".into());
                            }
                            data.extend_from_slice(&v.data);
                            if v.is_last
                                && let Some((pc, c)) = parsed.take()
                            {
                                return Ok((pc, c, Some(data)));
                            }
                        }
                        _ => return Err("P-DATA out of order".into()),
                    }
                }
            }
            Pdu::AbortRQ { .. } => return Err("the peer aborted the association".into()),
            Pdu::ReleaseRQ => return Err("the peer released the association".into()),
            _ => return Err("an unexpected PDU".into()),
        }
    }
}

fn send_message<S>(
    assoc: &mut dicom_ul::ClientAssociation<S>,
    pc: u8,
    cmd: &CommandSet,
    data: Option<&[u8]>,
) -> Result<(), String>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let value = PDataValue {
        presentation_context_id: pc,
        value_type: PDataValueType::Command,
        is_last: true,
        data: cmd.encode(),
    };
    assoc.send(&Pdu::PData { data: vec![value] }).map_err(|e| assoc_text(&e))?;
    if let Some(d) = data {
        let mut w = assoc.send_pdata(pc);
        w.write_all(d).map_err(|e| format!("sending the data set: {e}"))?;
        w.finish().map_err(|e| format!("sending the data set: {e}"))?;
    }
    Ok(())
}

/// The N-EVENT-REPORT-RSP to a report command (event type echoed).
pub fn report_response(rq: &CommandSet, status: u16) -> CommandSet {
    let mut rsp = dimse::response(rq, dimse::N_EVENT_REPORT_RSP, status);
    if let Some(t) = rq.u16(dimse::EVENT_TYPE_ID) {
        rsp = rsp.set_u16(dimse::EVENT_TYPE_ID, t);
    }
    rsp
}

/// Handles a message the PACS sent on the request's association: an
/// N-EVENT-REPORT-RQ is read, handed to `on_report` and answered.
fn handle_incoming<S>(
    assoc: &mut dicom_ul::ClientAssociation<S>,
    ts: &str,
    (pc, cmd, data): Message,
    on_report: &mut dyn FnMut(&Report) -> u16,
) -> Result<(), String>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    if cmd.u16(dimse::COMMAND_FIELD) != Some(dimse::N_EVENT_REPORT_RQ) {
        return Err("an unexpected DIMSE command on the commitment association".into());
    }
    let status = match parse_report(cmd.u16(dimse::EVENT_TYPE_ID).unwrap_or(0), data.as_deref().unwrap_or(&[]), ts) {
        Ok(r) => on_report(&r),
        Err(why) => {
            tracing::warn!("a storage commitment report cannot be read: {why}");
            dimse::STATUS_PROCESSING_FAILURE
        }
    };
    send_message(assoc, pc, &report_response(&cmd, status), None)
}

/// Asks `d` to commit `refs` (SOP class, instance) under `transaction`.
/// Ok once the PACS answered the N-ACTION with success; reports it sends on
/// the same association meanwhile go to `on_report`, which returns the
/// N-EVENT-REPORT-RSP status. Err carries the reason in words.
pub fn request(
    d: &Destination,
    default_calling_ae: &str,
    transaction: &str,
    refs: &[(String, String)],
    on_report: &mut dyn FnMut(&Report) -> u16,
) -> Result<(), String> {
    let called = d.called_ae.clone().unwrap_or_default();
    let (mut assoc, pc, ts) = super::scu::associate(d, default_calling_ae, STORAGE_COMMITMENT, || {
        format!("{called} does not accept Storage Commitment (push model)")
    })?;
    let mut data = Vec::new();
    if let Err(e) = request_dataset(transaction, refs).write_dataset_with_ts(&mut data, ts) {
        let _ = assoc.abort();
        return Err(format!("the commitment request cannot be encoded: {e}"));
    }
    let cmd = CommandSet::default()
        .set_uid(dimse::REQUESTED_SOP_CLASS, STORAGE_COMMITMENT)
        .set_u16(dimse::COMMAND_FIELD, dimse::N_ACTION_RQ)
        .set_u16(dimse::MESSAGE_ID, 1)
        .set_u16(dimse::DATA_SET_TYPE, 0)
        .set_uid(dimse::REQUESTED_SOP_INSTANCE, STORAGE_COMMITMENT_INSTANCE)
        .set_u16(dimse::ACTION_TYPE_ID, ACTION_REQUEST);
    let ts_uid = pc.transfer_syntax.clone();
    let answered = (|| -> Result<u16, String> {
        send_message(&mut assoc, pc.id, &cmd, Some(&data))?;
        loop {
            let m = receive_message(&mut assoc)?;
            if m.1.u16(dimse::COMMAND_FIELD) == Some(dimse::N_ACTION_RSP) {
                return Ok(m.1.u16(dimse::STATUS).unwrap_or(0xFFFF));
            }
            // A report before the N-ACTION-RSP: answered, then keep waiting.
            handle_incoming(&mut assoc, &ts_uid, m, on_report)?;
        }
    })();
    let status = match answered {
        Ok(s) => s,
        Err(e) => {
            let _ = assoc.abort();
            return Err(e);
        }
    };
    if status != dimse::STATUS_SUCCESS {
        let _ = assoc.release();
        return Err(format!("{called} answered the commitment request (N-ACTION) with status {status:04X}H"));
    }
    // A PACS may report on this association: wait a moment for it, then
    // release. (A report crossing the A-RELEASE-RQ is not read; the PACS sees
    // the association end, and the commitment timeout sends the results again.)
    let _ = assoc.inner_stream().set_read_timeout(Some(SAME_ASSOCIATION_WAIT));
    while let Ok(m) = receive_message(&mut assoc) {
        if handle_incoming(&mut assoc, &ts_uid, m, on_report).is_err() {
            let _ = assoc.abort();
            return Ok(());
        }
    }
    let _ = assoc.inner_stream().set_read_timeout(Some(Duration::from_secs(30)));
    let _ = assoc.release();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_node::scu::IMPLICIT_LE;

    #[test]
    fn a_request_data_set_lists_each_reference_under_its_transaction() {
        let refs = vec![
            ("1.2.840.10008.5.1.4.1.1.66.4".to_string(), "2.25.1".to_string()),
            ("1.2.840.10008.5.1.4.1.1.481.3".to_string(), "2.25.2".to_string()),
        ];
        let ts = TransferSyntaxRegistry.get(IMPLICIT_LE).expect("implicit LE");
        let mut b = Vec::new();
        request_dataset("2.25.99", &refs).write_dataset_with_ts(&mut b, ts).expect("writes");
        // A request reads as a report with everything committed (same sequence).
        let r = parse_report(EVENT_SUCCESS, &b, IMPLICIT_LE).expect("reads");
        assert_eq!(r.transaction, "2.25.99");
        assert_eq!(r.committed, refs);
        assert!(r.failed.is_empty());
        assert!(parse_report(1, &[], "1.2.3.4").is_err());
    }
}
