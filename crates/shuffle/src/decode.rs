//! Reading a partition segment back into batches.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;

use crate::ShuffleError;

/// Decodes one partition segment (an Arrow IPC stream) into its batches.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<RecordBatch>, ShuffleError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}
