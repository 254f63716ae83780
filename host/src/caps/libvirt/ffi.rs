//! The two libvirt calls `virt` 0.4.3 does not wrap usably, made directly on
//! `virt::sys`: its `get_all_domain_stats` hands back raw record pointers it
//! never frees (and reading them needs `unsafe` anyway), and it has no node
//! CPU statistics. Every pointer is read here, copied into owned values and
//! freed before returning; nothing raw leaves this file.

use std::ffi::{CStr, c_char, c_int};
use std::ptr;

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

/// One domain's numeric statistics, copied out of libvirt's record.
pub struct StatsRecord {
    pub name: String,
    /// The domain's UUID, formatted as libvirt formats it.
    pub uuid: String,
    /// (field, value) for every numeric typed parameter (`cpu.time`, ...).
    pub fields: Vec<(String, u64)>,
}

/// `virConnectGetAllDomainStats` over every domain of the connection, in one call.
pub fn all_domain_stats(connect: &Connect, stats: u32) -> Result<Vec<StatsRecord>, Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: `connect` is open (it is only closed on drop); libvirt stores a
    // NULL-terminated array it allocated into `records`, or fails with -1.
    let count =
        unsafe { sys::virConnectGetAllDomainStats(connect.as_ptr(), stats, &mut records, 0) };
    if count < 0 {
        return Err(Error::last_error());
    }
    let list = RecordList(records);
    let count = usize::try_from(count).unwrap_or(0);
    let mut copied = Vec::with_capacity(count);
    for index in 0..count {
        if list.0.is_null() {
            break;
        }
        // SAFETY: the array holds `count` records followed by NULL, and lives
        // until `list` is dropped at the end of this function.
        let record = unsafe { *list.0.add(index) };
        if record.is_null() {
            break;
        }
        // SAFETY: `record` points to a record owned by the list (see above).
        let record = unsafe { &*record };
        // SAFETY: `dom` is a valid domain the record holds a reference to;
        // the name belongs to the domain and is not freed by us.
        let name = unsafe { sys::virDomainGetName(record.dom) };
        if name.is_null() {
            continue;
        }
        // SAFETY: a non-null name from libvirt is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        let mut uuid = [0u8; sys::VIR_UUID_BUFLEN as usize];
        // SAFETY: `dom` is valid (see above); libvirt writes VIR_UUID_BUFLEN bytes.
        if unsafe { sys::virDomainGetUUID(record.dom, uuid.as_mut_ptr()) } < 0 {
            continue;
        }
        let params = match usize::try_from(record.nparams) {
            Ok(length) if length > 0 && !record.params.is_null() => {
                // SAFETY: libvirt filled `nparams` parameters at `params`.
                unsafe { std::slice::from_raw_parts(record.params, length) }
            }
            _ => &[],
        };
        copied.push(StatsRecord {
            name,
            // The same lowercase hyphenated text as virUUIDFormat, without
            // a printf per domain.
            uuid: uuid::Uuid::from_bytes(uuid).hyphenated().to_string(),
            fields: params.iter().filter_map(numeric).collect(),
        });
    }
    Ok(copied)
}

/// Frees the record array (params, domain references, records) on every path.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the array came from virConnectGetAllDomainStats and is freed once.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

/// A numeric typed parameter as (field, value); negatives clamp to zero.
fn numeric(param: &sys::virTypedParameter) -> Option<(String, u64)> {
    let kind = u32::try_from(param.type_).ok()?;
    // SAFETY: each arm reads the union member that `type_` says is set.
    let value = unsafe {
        match kind {
            sys::VIR_TYPED_PARAM_INT => u64::try_from(param.value.i).unwrap_or(0),
            sys::VIR_TYPED_PARAM_UINT => u64::from(param.value.ui),
            sys::VIR_TYPED_PARAM_LLONG => u64::try_from(param.value.l).unwrap_or(0),
            sys::VIR_TYPED_PARAM_ULLONG => param.value.ul,
            sys::VIR_TYPED_PARAM_BOOLEAN => u64::from(param.value.b != 0),
            // Saturating float-to-int cast; NaN becomes 0.
            sys::VIR_TYPED_PARAM_DOUBLE => param.value.d as u64,
            _ => return None,
        }
    };
    Some((field_name(&param.field), value))
}

/// A fixed-size C field name, up to its NUL.
fn field_name(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&byte| byte != 0)
        .map(|&byte| byte as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `virNodeGetCPUStats` summed over all CPUs: (field, nanoseconds).
pub fn node_cpu_stats(connect: &Connect) -> Result<Vec<(String, u64)>, Error> {
    let mut count: c_int = 0;
    // SAFETY: with a null array libvirt only writes the number of fields to `count`.
    let answer = unsafe {
        sys::virNodeGetCPUStats(
            connect.as_ptr(),
            sys::VIR_NODE_CPU_STATS_ALL_CPUS,
            ptr::null_mut(),
            &mut count,
            0,
        )
    };
    if answer < 0 {
        return Err(Error::last_error());
    }
    let Ok(length) = usize::try_from(count) else {
        return Ok(Vec::new());
    };
    if length == 0 {
        return Ok(Vec::new());
    }
    let mut params = vec![
        sys::virNodeCPUStats {
            field: [0; 80],
            value: 0
        };
        length
    ];
    // SAFETY: `params` has room for `count` entries; libvirt writes at most that many.
    let answer = unsafe {
        sys::virNodeGetCPUStats(
            connect.as_ptr(),
            sys::VIR_NODE_CPU_STATS_ALL_CPUS,
            params.as_mut_ptr(),
            &mut count,
            0,
        )
    };
    if answer < 0 {
        return Err(Error::last_error());
    }
    params.truncate(usize::try_from(count).unwrap_or(0));
    Ok(params
        .iter()
        .map(|param| (field_name(&param.field), param.value))
        .collect())
}
