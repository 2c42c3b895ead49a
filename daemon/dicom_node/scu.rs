//! C-STORE SCU: one association per result to a `kind = "dicom"`
//! destination, proposing the result's SOP class in Explicit and Implicit VR
//! Little Endian; success is status 0000 or a warning (Bxxx).

use std::io::Write;
use std::time::Duration;

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};

use super::dimse::{self, CommandSet};
use super::outbox::Item;
use crate::config::Destination;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub(super) const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// Sends one result; Err carries the reason in words.
pub fn store(d: &Destination, default_calling_ae: &str, item: &Item) -> Result<(), String> {
    let called = d.called_ae.clone().unwrap_or_default();
    let obj = dicom_object::open_file(&item.file).map_err(|e| format!("the outbox copy cannot be read: {e}"))?;
    let (mut assoc, pc, ts) = associate(d, default_calling_ae, &item.sop_class, || {
        format!("{called} accepts no presentation context for SOP class {}", item.sop_class)
    })?;
    let mut data = Vec::new();
    if let Err(e) = obj.write_dataset_with_ts(&mut data, ts) {
        let _ = assoc.abort();
        return Err(format!("the result cannot be encoded: {e}"));
    }
    let cmd = CommandSet::default()
        .set_uid(dimse::AFFECTED_SOP_CLASS, &item.sop_class)
        .set_u16(dimse::COMMAND_FIELD, dimse::C_STORE_RQ)
        .set_u16(dimse::MESSAGE_ID, 1)
        .set_u16(dimse::PRIORITY, 0)
        .set_u16(dimse::DATA_SET_TYPE, 0)
        .set_uid(dimse::AFFECTED_SOP_INSTANCE, &item.sop_instance);
    let sent = (|| -> Result<CommandSet, String> {
        let value = PDataValue {
            presentation_context_id: pc.id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: cmd.encode(),
        };
        assoc.send(&Pdu::PData { data: vec![value] }).map_err(|e| assoc_text(&e))?;
        {
            let mut w = assoc.send_pdata(pc.id);
            w.write_all(&data).map_err(|e| format!("sending the data set: {e}"))?;
            w.finish().map_err(|e| format!("sending the data set: {e}"))?;
        }
        receive_command(&mut assoc)
    })();
    let rsp = match sent {
        Ok(r) => r,
        Err(e) => {
            let _ = assoc.abort();
            return Err(e);
        }
    };
    let _ = assoc.release();
    let status = rsp.u16(dimse::STATUS).unwrap_or(0xFFFF);
    if status == 0 || status & 0xF000 == 0xB000 {
        Ok(())
    } else {
        Err(format!("{called} answered C-STORE with status {status:04X}H"))
    }
}

/// An association with destination `d` (its called AE title at host:port,
/// calling as its `calling_ae` or `default_calling_ae`) proposing
/// `sop_class` in Explicit and Implicit VR Little Endian: the association,
/// the context the peer accepted and its transfer syntax. `refused` words
/// the error when the peer accepts no context. Err carries the reason in
/// words; the association is aborted on every error.
pub(super) fn associate(
    d: &Destination,
    default_calling_ae: &str,
    sop_class: &str,
    refused: impl FnOnce() -> String,
) -> Result<
    (
        dicom_ul::ClientAssociation<std::net::TcpStream>,
        dicom_ul::pdu::PresentationContextNegotiated,
        &'static dicom_encoding::TransferSyntax,
    ),
    String,
> {
    let host = d.host.clone().unwrap_or_default();
    let port = d.port.unwrap_or(104);
    let called = d.called_ae.clone().unwrap_or_default();
    let calling = d.calling_ae.clone().unwrap_or_else(|| default_calling_ae.to_string());
    let assoc = ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title(called.clone())
        .with_presentation_context(sop_class.to_string(), vec![EXPLICIT_LE.to_string(), IMPLICIT_LE.to_string()])
        .connection_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .write_timeout(Duration::from_secs(120))
        .establish((host.as_str(), port))
        .map_err(|e| format!("no association with {called} at {host}:{port}: {}", assoc_text(&e)))?;
    let Some(pc) = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .cloned()
    else {
        let _ = assoc.abort();
        return Err(refused());
    };
    let Some(ts) = TransferSyntaxRegistry.get(&pc.transfer_syntax) else {
        let _ = assoc.abort();
        return Err(format!("{called} chose transfer syntax {}, which cannot be written", pc.transfer_syntax));
    };
    Ok((assoc, pc, ts))
}

/// Reads PDUs until a whole command set has arrived.
pub fn receive_command<S>(assoc: &mut dicom_ul::ClientAssociation<S>) -> Result<CommandSet, String>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let mut bytes = Vec::new();
    loop {
        match assoc.receive().map_err(|e| assoc_text(&e))? {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        if bytes.len() + v.data.len() > dimse::MAX_COMMAND_BYTES {
                            return Err("a response command over 64 KiB".into());
                        }
                        bytes.extend_from_slice(&v.data);
                        if v.is_last {
                            return CommandSet::parse(&bytes).map_err(|e| e.to_string());
                        }
                    }
                }
            }
            Pdu::AbortRQ { .. } => return Err("the peer aborted the association".into()),
            _ => return Err("an unexpected PDU instead of the response".into()),
        }
    }
}

/// dicom-ul's errors in words (their Display carries Debug text of PDUs).
pub fn assoc_text(e: &dicom_ul::association::Error) -> String {
    use dicom_ul::association::Error as E;
    match e {
        E::Connect { source, .. } => format!("cannot connect: {source}"),
        E::ToAddress { .. } => "the address cannot be resolved".into(),
        E::Rejected { .. } => "the association was rejected".into(),
        E::NoAcceptedPresentationContexts { .. } => "no presentation context was accepted".into(),
        E::Aborted { .. } => "the peer aborted the association".into(),
        E::ConnectionClosed { .. } => "the connection closed".into(),
        E::Timeout { .. } => "timed out".into(),
        E::ReceivePdu { .. } | E::WireRead { .. } => "the peer's answer could not be read".into(),
        E::SendPdu { .. } | E::WireSend { .. } => "sending failed".into(),
        _ => "the association failed".into(),
    }
}
