//! placeholder: the inspect report (filled in by the integration work)
