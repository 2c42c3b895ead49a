#!/usr/bin/env python3
"""Test peer: a PACS built on pynetdicom that answers Storage Commitment
(push model) on the SAME association as the N-ACTION (Orthanc, the other
peer, always opens a new one).

Usage:
    python tests/peers/stgcmt_scp.py PORT AE_TITLE [--lose-first-seg]

Stores SEG and RTSTRUCT instances sent by C-STORE (in memory, by SOP
Instance UID). On an N-ACTION-RQ (action type 1) it answers success, then,
from a helper thread half a second later, sends the N-EVENT-REPORT-RQ on the
same association: the references it holds (with the same SOP class) in the
Referenced SOP Sequence, the others in the Failed SOP Sequence with Failure
Reason 0x0112 (no such object instance): event type 1 or 2. With
--lose-first-seg the first SEG stored is answered with success but dropped,
as a PACS that lost it.

Prints "listening" once it accepts associations, then one JSON line per
report: {"transaction": ..., "event_type": 1|2, "committed": [uids],
"failed": [uids], "status": N-EVENT-REPORT-RSP status}.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    RTStructureSetStorage,
    SegmentationStorage,
    StorageCommitmentPushModel,
)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def main() -> None:
    port = int(sys.argv[1])
    aet = sys.argv[2]
    lose_first_seg = "--lose-first-seg" in sys.argv[3:]
    stored: dict[str, str] = {}
    lost: list[str] = []
    lock = threading.Lock()
    out = threading.Lock()

    def on_store(event):
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        with lock:
            if lose_first_seg and not lost and ds.SOPClassUID == SegmentationStorage:
                lost.append(uid)
            else:
                stored[uid] = str(ds.SOPClassUID)
        return 0x0000

    def report(assoc, request: Dataset) -> None:
        time.sleep(0.5)
        ok, failed = [], []
        with lock:
            for ref in request.ReferencedSOPSequence:
                item = Dataset()
                item.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
                item.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
                if stored.get(str(ref.ReferencedSOPInstanceUID)) == str(ref.ReferencedSOPClassUID):
                    ok.append(item)
                else:
                    item.FailureReason = 0x0112
                    failed.append(item)
        info = Dataset()
        info.TransactionUID = request.TransactionUID
        if ok:
            info.ReferencedSOPSequence = ok
        if failed:
            info.FailedSOPSequence = failed
        event_type = 2 if failed else 1
        status, _ = assoc.send_n_event_report(
            info, event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        line = {
            "transaction": str(request.TransactionUID),
            "event_type": event_type,
            "committed": [str(i.ReferencedSOPInstanceUID) for i in ok],
            "failed": [str(i.ReferencedSOPInstanceUID) for i in failed],
            "status": int(status.Status) if "Status" in status else None,
        }
        with out:
            print(json.dumps(line), flush=True)

    def on_n_action(event):
        if event.action_type != 1:
            return 0x0123, None
        request = event.action_information
        threading.Thread(target=report, args=(event.assoc, request), daemon=True).start()
        return 0x0000, None

    ae = AE(ae_title=aet)
    ae.add_supported_context(SegmentationStorage)
    ae.add_supported_context(RTStructureSetStorage)
    ae.add_supported_context(StorageCommitmentPushModel)
    ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_N_ACTION, on_n_action)],
    )
    print("listening", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
