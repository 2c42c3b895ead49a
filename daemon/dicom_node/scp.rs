//! The Storage SCP: one listening thread, one thread per association up to
//! `[dicom] max_associations` (more are rejected at once: transient, local
//! limit exceeded), associations negotiated by dicom-ul.
//!
//! Who may associate: the called AE title must be this node's, the calling AE
//! title one of `allowed_callers` (with its address when the entry names one);
//! anyone else is rejected (permanent, calling or called AE title not
//! recognised). Only the image storage SOP classes the reader reads, in the
//! transfer syntaxes it reads, and Verification are accepted.
//!
//! A C-STORE's data set is streamed to the spool (at most one PDU in memory)
//! and answered 0000 only once the file is fsynced and renamed in; A700 when
//! the spool's disk is below `[disk] min_free_mb` (nothing older is deleted
//! to make room); A900 when the data set's SOP Instance UID is not the
//! announced one; C000 when it cannot be read. A malformed PDU, an unexpected
//! one or a silence longer than `timeout_seconds` aborts the association;
//! instances already answered stay in the spool.
//!
//! With a `storage_commitment` destination, the SCP also takes that PACS's
//! storage commitment reports: its AE title (the destination's `called_ae`,
//! from its `host` when that is an address) may associate, the Storage
//! Commitment Push Model SOP class is accepted with the caller as SCP (the
//! SCP/SCU role selection it proposes is answered), and an N-EVENT-REPORT-RQ
//! is recorded in the journal's outbox before its N-EVENT-REPORT-RSP (0000,
//! or 0110 when it could not be recorded). Such a caller's C-STOREs are
//! refused (0124) unless it is in `allowed_callers` too.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dicom_ul::association::Association;
use dicom_ul::association::server::{AccessControl, Negotiation};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason, AssociationRJSource, PDataValue,
    PDataValueType, PresentationContextResultReason, RequestorRoles, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};

use super::commit::{self, STORAGE_COMMITMENT};
use super::dimse::{self, CommandSet};
use super::spool::{Spool, SpoolError};
use crate::config::AllowedCaller;

/// Verification.
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// The storage SOP classes accepted: those the reader turns into volumes.
pub const STORAGE_SOP_CLASSES: [&str; 6] = [
    "1.2.840.10008.5.1.4.1.1.2",     // CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",   // Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2",   // Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.128",   // Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.130",   // Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.128.1", // Legacy Converted Enhanced PET Image
];

/// The transfer syntaxes accepted: those the reader decodes.
pub const TRANSFER_SYNTAXES: [&str; 13] = [
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50", // JPEG Baseline
    "1.2.840.10008.1.2.4.51", // JPEG Extended (12 bit)
    "1.2.840.10008.1.2.4.57", // JPEG Lossless
    "1.2.840.10008.1.2.4.70", // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.5",    // RLE Lossless
];

/// What the SCP needs, shared by its threads.
#[derive(Debug)]
pub struct ScpSettings {
    /// This node's AE title.
    pub ae_title: String,
    /// Who may associate.
    pub allowed: Vec<AllowedCaller>,
    /// Associations at once.
    pub max_associations: usize,
    /// Largest PDU received.
    pub max_pdu_length: u32,
    /// Read and write timeout.
    pub timeout: Duration,
    /// Where instances go.
    pub spool: Spool,
    /// Storage commitment reports taken (a destination asks for commitment).
    pub commitment: Option<CommitmentReports>,
}

/// What the SCP needs to take storage commitment reports.
#[derive(Debug, Clone)]
pub struct CommitmentReports {
    /// The journal holding the outbox.
    pub journal: std::path::PathBuf,
    /// The state folder.
    pub state: std::path::PathBuf,
    /// The destinations with `storage_commitment`.
    pub destinations: Vec<crate::config::Destination>,
    /// Their AE titles (and addresses), allowed to associate.
    pub callers: Vec<AllowedCaller>,
}

impl CommitmentReports {
    /// Records a report; returns the N-EVENT-REPORT-RSP status.
    pub fn record(&self, r: &commit::Report, calling: &str) -> u16 {
        match super::outbox::Outbox::connect(&self.journal, &self.state, &self.destinations) {
            Ok(ob) => super::outbox::record_report(&ob, r, &format!("an association from {calling}")),
            Err(e) => {
                tracing::error!("a storage commitment report could not be recorded: {e}");
                dimse::STATUS_PROCESSING_FAILURE
            }
        }
    }
}

/// SCP/SCU role selection: a caller may be the SCP of Storage Commitment
/// (the PACS sending its report); every other proposal gets the defaults.
struct Roles;

impl Negotiation for Roles {
    fn negotiate_roles(&self, sop_class_uid: &str, _scu_role: bool, scp_role: bool) -> Option<RequestorRoles> {
        (sop_class_uid.trim_end_matches('\0') == STORAGE_COMMITMENT && scp_role)
            .then_some(RequestorRoles { scu: false, scp: true })
    }
}

/// Counts the SCP keeps (for logs and tests; metrics read them).
#[derive(Debug, Default)]
pub struct ScpCounters {
    /// Associations being served.
    pub active: AtomicUsize,
    /// Instances stored.
    pub stored: AtomicUsize,
}

struct Access {
    allowed: Vec<AllowedCaller>,
    peer: IpAddr,
}

impl Access {
    fn admits(&self, calling_ae_title: &str) -> bool {
        self.allowed
            .iter()
            .any(|a| a.ae_title.trim() == calling_ae_title.trim() && a.host.is_none_or(|h| same_ip(h, self.peer)))
    }
}

impl AccessControl for Access {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if self.admits(calling_ae_title) {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        }
    }
}

/// Equal addresses, an IPv4-mapped IPv6 peer equal to its IPv4 form.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Accepts associations until `stop` is set.
pub fn serve(listener: TcpListener, s: Arc<ScpSettings>, counters: Arc<ScpCounters>, stop: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("DICOM listener: cannot poll for connections: {e}");
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                if counters.active.load(Ordering::SeqCst) >= s.max_associations {
                    tracing::warn!(
                        "association from {} rejected: {} associations are being served already ([dicom] max_associations)",
                        peer.ip(),
                        s.max_associations
                    );
                    std::thread::spawn(move || reject_busy(stream));
                    continue;
                }
                counters.active.fetch_add(1, Ordering::SeqCst);
                let (s, c) = (s.clone(), counters.clone());
                let spawned = std::thread::Builder::new().name("edgeseg-dicom".into()).spawn(move || {
                    association(stream, peer, &s, &c);
                    c.active.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    counters.active.fetch_sub(1, Ordering::SeqCst);
                    tracing::error!("cannot start a thread for the association from {}: {e}", peer.ip());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                tracing::warn!("DICOM listener: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Answers an association request with A-ASSOCIATE-RJ (transient, local limit exceeded).
fn reject_busy(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    // The request is read (not parsed) so the caller is not answered mid-send.
    let mut buf = [0u8; 4096];
    let _ = std::io::Read::read(&mut stream, &mut buf);
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::new();
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        let _ = std::io::Write::write_all(&mut stream, &out);
    }
}

/// What a C-STORE in progress does with its data.
enum Store {
    /// Written to the spool.
    Spooling(super::spool::Incoming),
    /// A storage commitment report's data set, read whole.
    Report(Vec<u8>),
    /// Read and dropped; answered with this status at the end.
    Discarding(u16),
}

struct Pending {
    command: CommandSet,
    context: u8,
    store: Option<Store>,
}

fn association(stream: TcpStream, peer: SocketAddr, s: &ScpSettings, counters: &ScpCounters) {
    let scanners = Access { allowed: s.allowed.clone(), peer: peer.ip() };
    let mut allowed = s.allowed.clone();
    if let Some(c) = &s.commitment {
        allowed.extend(c.callers.iter().cloned());
    }
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(Access { allowed, peer: peer.ip() })
        .with_negotiation(Roles)
        .ae_title(s.ae_title.clone())
        .with_abstract_syntax(VERIFICATION)
        .max_pdu_length(s.max_pdu_length)
        // A PDU declaring more than max_pdu_length is refused, not buffered
        // (the A-ASSOCIATE-RQ is read before any access check).
        .strict(true)
        .read_timeout(s.timeout)
        .write_timeout(s.timeout);
    for c in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(c);
    }
    if s.commitment.is_some() {
        options = options.with_abstract_syntax(STORAGE_COMMITMENT);
    }
    for t in TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(t);
    }
    let mut assoc = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("association from {} refused: {}", peer.ip(), refusal_text(&e));
            return;
        }
    };
    let calling = assoc.peer_ae_title().trim().to_string();
    let scanner = scanners.admits(&calling);
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, pc.abstract_syntax.clone(), pc.transfer_syntax.clone()))
        .collect();
    tracing::info!("association from {calling} at {}: {} presentation context(s) accepted", peer.ip(), contexts.len());
    let mut command_bytes: Vec<u8> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut stored = 0usize;
    loop {
        let pdu = match assoc.receive() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    "association from {calling} at {} ended without release after {stored} instance(s): {}; instances already answered are kept",
                    peer.ip(),
                    receive_text(&e)
                );
                let _ = assoc.abort();
                return;
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for v in data {
                    match step(v, &mut command_bytes, &mut pending, &contexts, s, &calling, scanner) {
                        Ok(Some((context, rsp))) => {
                            if rsp.u16(dimse::STATUS) == Some(dimse::STATUS_SUCCESS)
                                && rsp.u16(dimse::COMMAND_FIELD) == Some(dimse::C_STORE_RSP)
                            {
                                stored += 1;
                                counters.stored.fetch_add(1, Ordering::SeqCst);
                            }
                            let out = Pdu::PData {
                                data: vec![PDataValue {
                                    presentation_context_id: context,
                                    value_type: PDataValueType::Command,
                                    is_last: true,
                                    data: rsp.encode(),
                                }],
                            };
                            if let Err(e) = assoc.send(&out) {
                                tracing::warn!(
                                    "association from {calling}: cannot send a response: {}",
                                    receive_text(&e)
                                );
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(why) => {
                            tracing::warn!("association from {calling} at {} aborted: {why}", peer.ip());
                            let _ = assoc.send(&Pdu::AbortRQ {
                                source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu),
                            });
                            return;
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                tracing::info!("association from {calling} released: {stored} instance(s) stored");
                return;
            }
            Pdu::AbortRQ { .. } => {
                tracing::warn!(
                    "association from {calling} aborted by the caller after {stored} instance(s); they are kept"
                );
                return;
            }
            other => {
                tracing::warn!("association from {calling} aborted: unexpected {}", pdu_name(&other));
                let _ = assoc.send(&Pdu::AbortRQ {
                    source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu),
                });
                return;
            }
        }
    }
}

/// One P-DATA value: returns a response to send, or the reason to abort.
fn step(
    v: PDataValue,
    command_bytes: &mut Vec<u8>,
    pending: &mut Option<Pending>,
    contexts: &[(u8, String, String)],
    s: &ScpSettings,
    calling: &str,
    scanner: bool,
) -> Result<Option<(u8, CommandSet)>, String> {
    let Some((_, abstract_syntax, ts)) = contexts.iter().find(|c| c.0 == v.presentation_context_id) else {
        return Err(format!("P-DATA on presentation context {} that was not accepted", v.presentation_context_id));
    };
    match v.value_type {
        PDataValueType::Command => {
            if pending.is_some() {
                return Err("a command before the previous one's data set ended".into());
            }
            if command_bytes.len() + v.data.len() > dimse::MAX_COMMAND_BYTES {
                return Err("a command set over 64 KiB".into());
            }
            command_bytes.extend_from_slice(&v.data);
            if !v.is_last {
                return Ok(None);
            }
            let cmd = CommandSet::parse(command_bytes).map_err(|e| e.to_string())?;
            command_bytes.clear();
            let field = cmd.u16(dimse::COMMAND_FIELD);
            let has_data = cmd.u16(dimse::DATA_SET_TYPE).is_some_and(|t| t != dimse::NO_DATA_SET);
            match field {
                Some(dimse::C_ECHO_RQ) => Ok(Some((
                    v.presentation_context_id,
                    dimse::response(&cmd, dimse::C_ECHO_RSP, dimse::STATUS_SUCCESS),
                ))),
                Some(dimse::C_STORE_RQ) if has_data => {
                    let class = cmd.uid(dimse::AFFECTED_SOP_CLASS).unwrap_or_default();
                    let instance = cmd.uid(dimse::AFFECTED_SOP_INSTANCE).unwrap_or_default();
                    let store = if !scanner {
                        tracing::warn!(
                            "C-STORE from {calling} refused with 0124: it is a commitment PACS, not in [dicom] allowed_callers"
                        );
                        Store::Discarding(dimse::STATUS_NOT_AUTHORIZED)
                    } else if class != *abstract_syntax || !STORAGE_SOP_CLASSES.contains(&class.as_str()) {
                        Store::Discarding(dimse::STATUS_SOP_CLASS_NOT_SUPPORTED)
                    } else if instance.is_empty() || instance.len() > 64 {
                        Store::Discarding(dimse::STATUS_CANNOT_UNDERSTAND)
                    } else if !s.spool.has_room() {
                        tracing::warn!(
                            "C-STORE from {calling} refused with A700: the spool's disk is below [disk] min_free_mb"
                        );
                        Store::Discarding(dimse::STATUS_OUT_OF_RESOURCES)
                    } else {
                        match s.spool.begin(&class, &instance, ts, calling) {
                            Ok(i) => Store::Spooling(i),
                            Err(e) => {
                                tracing::error!("C-STORE from {calling}: {e}");
                                Store::Discarding(status_of(&e))
                            }
                        }
                    };
                    *pending = Some(Pending { command: cmd, context: v.presentation_context_id, store: Some(store) });
                    Ok(None)
                }
                Some(dimse::N_EVENT_REPORT_RQ)
                    if has_data && s.commitment.is_some() && abstract_syntax == STORAGE_COMMITMENT =>
                {
                    let store = if cmd.uid(dimse::AFFECTED_SOP_CLASS).as_deref() == Some(STORAGE_COMMITMENT) {
                        Store::Report(Vec::new())
                    } else {
                        Store::Discarding(dimse::STATUS_PROCESSING_FAILURE)
                    };
                    *pending = Some(Pending { command: cmd, context: v.presentation_context_id, store: Some(store) });
                    Ok(None)
                }
                Some(f) => Err(format!("DIMSE command {f:#06x} is not served here")),
                None => Err("a command set without a command field".into()),
            }
        }
        PDataValueType::Data => {
            let Some(p) = pending.as_mut() else {
                return Err("a data set without a command".into());
            };
            if p.context != v.presentation_context_id {
                return Err("a data set on another presentation context than its command".into());
            }
            if let Some(Store::Spooling(i)) = p.store.as_mut()
                && let Err(e) = i.write(&v.data)
            {
                tracing::error!("C-STORE from {calling}: {e}");
                p.store = Some(Store::Discarding(status_of(&e)));
            }
            if let Some(Store::Report(b)) = p.store.as_mut() {
                if b.len() + v.data.len() > commit::MAX_REPORT_BYTES {
                    return Err("a storage commitment report over 16 MiB".into());
                }
                b.extend_from_slice(&v.data);
            }
            if !v.is_last {
                return Ok(None);
            }
            let Some(p) = pending.take() else { return Ok(None) };
            let status = match p.store {
                Some(Store::Spooling(i)) => match i.commit() {
                    Ok(_) => dimse::STATUS_SUCCESS,
                    Err(e) => {
                        tracing::warn!("C-STORE from {calling} refused: {e}");
                        status_of(&e)
                    }
                },
                Some(Store::Report(b)) => {
                    let event = p.command.u16(dimse::EVENT_TYPE_ID).unwrap_or(0);
                    let status = match (commit::parse_report(event, &b, ts), &s.commitment) {
                        (Ok(r), Some(c)) => c.record(&r, calling),
                        (Err(why), _) => {
                            tracing::warn!("a storage commitment report from {calling} cannot be read: {why}");
                            dimse::STATUS_PROCESSING_FAILURE
                        }
                        (Ok(_), None) => dimse::STATUS_PROCESSING_FAILURE,
                    };
                    return Ok(Some((p.context, commit::report_response(&p.command, status))));
                }
                Some(Store::Discarding(st)) => st,
                None => dimse::STATUS_PROCESSING_FAILURE,
            };
            if p.command.u16(dimse::COMMAND_FIELD) == Some(dimse::N_EVENT_REPORT_RQ) {
                return Ok(Some((p.context, commit::report_response(&p.command, status))));
            }
            Ok(Some((p.context, dimse::response(&p.command, dimse::C_STORE_RSP, status))))
        }
    }
}

fn status_of(e: &SpoolError) -> u16 {
    match e {
        SpoolError::Mismatch => dimse::STATUS_DATASET_MISMATCH,
        SpoolError::Invalid(_) => dimse::STATUS_CANNOT_UNDERSTAND,
        SpoolError::Io { .. } if e.is_out_of_space() => dimse::STATUS_OUT_OF_RESOURCES,
        SpoolError::Io { .. } => dimse::STATUS_OUT_OF_RESOURCES,
    }
}

fn pdu_name(p: &Pdu) -> &'static str {
    match p {
        Pdu::Unknown { .. } => "unknown PDU",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

/// The refusal in words (dicom-ul's errors carry Debug text).
fn refusal_text(e: &dicom_ul::association::Error) -> String {
    use dicom_ul::association::Error as E;
    match e {
        E::Rejected { association_rj, .. } => match &association_rj.source {
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized) => {
                "the calling AE title and address are not in [dicom] allowed_callers".into()
            }
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized) => {
                "the called AE title is not this node's".into()
            }
            _ => "the association request was rejected".into(),
        },
        other => receive_text(other),
    }
}

fn receive_text(e: &dicom_ul::association::Error) -> String {
    use dicom_ul::association::Error as E;
    match e {
        E::ReceivePdu { .. } => "a malformed or unreadable PDU".into(),
        E::ConnectionClosed { .. } => "the connection closed".into(),
        E::UnexpectedPdu { .. } => "an unexpected PDU".into(),
        E::UnknownPdu { .. } => "an unknown PDU type".into(),
        E::Aborted { .. } => "aborted".into(),
        E::Timeout { .. } => "timed out ([dicom] timeout_seconds)".into(),
        E::ProtocolVersionMismatch { .. } => "another protocol version".into(),
        _ => {
            let t = e.to_string();
            if t.to_ascii_lowercase().contains("timed out") || t.contains("WouldBlock") || t.contains("os error 11") {
                "timed out ([dicom] timeout_seconds)".into()
            } else {
                "the connection failed".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_matched_by_ae_title_and_address() {
        let a = Access {
            allowed: vec![
                AllowedCaller { ae_title: "CT01".into(), host: Some("10.0.0.5".parse().expect("ip")) },
                AllowedCaller { ae_title: "ANY".into(), host: None },
            ],
            peer: "::ffff:10.0.0.5".parse().expect("ip"),
        };
        assert!(a.check_access("EDGESEG", "CT01", "EDGESEG", None).is_ok());
        assert!(a.check_access("EDGESEG", "ANY", "EDGESEG", None).is_ok());
        assert_eq!(
            a.check_access("EDGESEG", "CT02", "EDGESEG", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            a.check_access("EDGESEG", "CT01", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        let b = Access { allowed: a.allowed.clone(), peer: "10.0.0.6".parse().expect("ip") };
        assert!(b.check_access("EDGESEG", "CT01", "EDGESEG", None).is_err());
    }
}
