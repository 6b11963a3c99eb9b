//! Where objects live. `s3`: a client of an S3-compatible cluster (Ceph RGW, MinIO, Garage, AWS,
//! R2), the backend the storage seam calls when postgate runs in front of such a cluster.

pub mod s3;
