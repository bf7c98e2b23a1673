//! Management: JSON-RPC methods (Kamailio names), Prometheus metrics.
