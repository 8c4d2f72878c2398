//! Named benchmark workloads for `seedq-consumer bench`. STUB: owned by the kernels-cpu helper.
