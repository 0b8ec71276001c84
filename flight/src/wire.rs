//! Checks on incoming Flight messages before arrow decodes them: arrow's IPC reader trusts the
//! buffer offsets and lengths in a message header and panics when they point past the body,
//! so a truncated or forged message is refused here, naming what is wrong.

use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use datafusion::arrow::ipc;

/// Passes `data` on if its header is a readable IPC message whose buffers lie in its body.
pub fn check_message(data: FlightData) -> Result<FlightData, FlightError> {
    if data.data_header.is_empty() {
        return Ok(data);
    }
    let bad = |m: String| FlightError::DecodeError(m);
    let message = ipc::root_as_message(&data.data_header)
        .map_err(|e| bad(format!("unreadable IPC message header: {e}")))?;
    let body = data.data_body.len() as u64;
    let declared =
        u64::try_from(message.bodyLength()).map_err(|_| bad("negative IPC body length".into()))?;
    if declared > body {
        return Err(bad(format!(
            "the message declares a body of {declared} bytes but carries {body} (truncated?)"
        )));
    }
    let batch = match message.header_type() {
        ipc::MessageHeader::RecordBatch => message.header_as_record_batch(),
        ipc::MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    if let Some(batch) = batch {
        if batch.length() < 0 {
            return Err(bad("negative row count".into()));
        }
        for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
            let end = u64::try_from(b.offset())
                .ok()
                .zip(u64::try_from(b.length()).ok())
                .and_then(|(o, l)| o.checked_add(l));
            if end.is_none_or(|end| end > body) {
                return Err(bad(format!(
                    "buffer {i} (offset {}, length {}) lies outside the {body}-byte body",
                    b.offset(),
                    b.length()
                )));
            }
        }
        for (i, n) in batch.nodes().into_iter().flatten().enumerate() {
            if n.length() < 0 || n.null_count() < 0 || n.null_count() > n.length() {
                return Err(bad(format!("field node {i} has invalid counts")));
            }
        }
    }
    Ok(data)
}
