//! Hugging Face `save_to_disk` datasets are Arrow IPC *stream* files; this turns their rows into JSON
//! objects (strings, numbers, booleans, lists and structs: the types those datasets use).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// All rows of an Arrow IPC stream as JSON objects keyed by column name.
pub fn stream_to_rows(bytes: &[u8], what: &str) -> Result<Vec<Value>> {
    let bad = |message: String| Error::BadData {
        path: what.to_string(),
        message,
    };
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| bad(format!("not an Arrow IPC stream: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("reading a record batch: {e}")))?;
        rows.extend(batch_rows(&batch).map_err(bad)?);
    }
    Ok(rows)
}

fn batch_rows(batch: &RecordBatch) -> std::result::Result<Vec<Value>, String> {
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut obj = Map::new();
        for (field, col) in schema.fields().iter().zip(batch.columns()) {
            obj.insert(field.name().clone(), value_at(col.as_ref(), i)?);
        }
        rows.push(Value::Object(obj));
    }
    Ok(rows)
}

fn value_at(array: &dyn Array, i: usize) -> std::result::Result<Value, String> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(i).into(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(i).into(),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_string()),
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let items = list.value(i);
            list_values(items.as_ref())?
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let items = list.value(i);
            list_values(items.as_ref())?
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut obj = Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                obj.insert(f.name().clone(), value_at(col.as_ref(), i)?);
            }
            Value::Object(obj)
        }
        other => return Err(format!("unsupported Arrow column type {other}")),
    })
}

fn list_values(items: &dyn Array) -> std::result::Result<Value, String> {
    (0..items.len())
        .map(|j| value_at(items, j))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Value::Array)
}
