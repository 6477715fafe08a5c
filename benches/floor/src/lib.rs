//! Three floors under `Engine.is_allowed`, each doing strictly less than any
//! engine must: no policy is evaluated by any of them.
//!
//! - `call`: takes the four arguments and returns `False`.
//! - `read`: also reads the three uid strings as UTF-8 and the context values
//!   for five keys (type-checked: bool, int, or str read as UTF-8).
//! - `lookup`: also finds each uid string in a hash map of the known uids, the
//!   least any engine does to know which entity a string names.
//! - `batch`: under `authorize_batch` with handles: for each `(p, a, r, ctx)`
//!   tuple, reads the four items and the five context values, and returns a
//!   list of bools (handles are already resolved, so nothing is looked up).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString, PyTuple};
use rustc_hash::FxHashMap;

#[pyclass(frozen)]
struct Floor {
    keys: Vec<Py<PyString>>,
    uids: FxHashMap<String, u32>,
}

fn read_value(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(b) = v.downcast_exact::<PyBool>() {
        Ok(b.is_true() as u64)
    } else if let Ok(i) = v.downcast_exact::<PyInt>() {
        Ok(i.extract::<i64>()? as u64)
    } else {
        Ok(v.downcast_exact::<PyString>()?.to_str()?.len() as u64)
    }
}

impl Floor {
    fn read_ctx(&self, context: &Bound<'_, PyAny>) -> PyResult<u64> {
        let ctx = context.downcast::<PyDict>()?;
        let mut acc = 0u64;
        for k in &self.keys {
            if let Some(v) = ctx.get_item(k.bind(context.py()))? {
                acc = acc.wrapping_add(read_value(&v)?);
            }
        }
        Ok(acc)
    }
}

#[pymethods]
impl Floor {
    #[new]
    fn new(keys: Vec<Bound<'_, PyString>>, uids: Vec<String>) -> Self {
        Floor {
            keys: keys
                .into_iter()
                .map(|k| PyString::intern(k.py(), k.to_str().unwrap_or("")).unbind())
                .collect(),
            uids: uids.into_iter().zip(0u32..).collect(),
        }
    }

    fn batch(&self, requests: &Bound<'_, PyAny>) -> PyResult<Vec<bool>> {
        self.batch_inner(requests)
    }

    #[pyo3(signature = (principal, action, resource, context=None))]
    fn call(
        &self,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = (principal, action, resource, context);
        false
    }

    #[pyo3(signature = (principal, action, resource, context=None))]
    fn read(
        &self,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.read_all([principal, action, resource], context, false)
    }

    #[pyo3(signature = (principal, action, resource, context=None))]
    fn lookup(
        &self,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.read_all([principal, action, resource], context, true)
    }
}

impl Floor {
    fn batch_inner(&self, requests: &Bound<'_, PyAny>) -> PyResult<Vec<bool>> {
        let mut out = Vec::new();
        for item in requests.try_iter()? {
            let item = item?;
            let t = item.downcast_exact::<PyTuple>()?;
            let mut acc = 0u64;
            for i in 0..3 {
                acc = acc.wrapping_add(t.get_borrowed_item(i)?.as_ptr() as u64);
            }
            acc = acc.wrapping_add(self.read_ctx(&t.get_borrowed_item(3)?.to_owned())?);
            out.push(std::hint::black_box(acc) == u64::MAX);
        }
        Ok(out)
    }

    /// Read the uid strings (and, with `find`, look each up) and the context values.
    #[inline(always)]
    fn read_all(
        &self,
        uids: [&Bound<'_, PyAny>; 3],
        context: Option<&Bound<'_, PyAny>>,
        find: bool,
    ) -> PyResult<bool> {
        let mut n = 0u64;
        for u in uids {
            let s = u.downcast_exact::<PyString>()?.to_str()?;
            n += if find {
                self.uids.get(s).copied().unwrap_or(u32::MAX) as u64
            } else {
                s.len() as u64
            };
        }
        let acc = match context {
            Some(c) => self.read_ctx(c)?,
            None => 0,
        };
        Ok(std::hint::black_box(n + acc) == u64::MAX)
    }
}

#[pymodule]
fn tether_floor(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Floor>()
}
