//! The SMTP front end: listener and ESMTP session.
