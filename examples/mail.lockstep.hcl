# A mail service: Postfix's queue and Dovecot's mailboxes live on separate
# volumes. The mail plugin pauses Postfix and Dovecot (SIGSTOP) at a moment
# when no message file is half-written, for the instant the marker is placed.
service "mail" {
  volume "queue" {
    size       = "20GiB"
    initiators = ["iqn.2026-11.com.example:mx1"]
  }

  volume "mailboxes" {
    size       = "1TiB"
    block_size = 4096
    initiators = ["iqn.2026-11.com.example:mx1"]

    chap {
      username        = "mx1"
      secret          = env("MAIL_CHAP_SECRET")
      mutual_username = "lockstep-mail"
      mutual_secret   = env("MAIL_CHAP_MUTUAL_SECRET")
    }
  }

  app "mail" "postfix-dovecot" {
    volumes                 = ["queue", "mailboxes"]
    postfix_queue_directory = "/var/spool/postfix"
    dovecot_mail_location   = "maildir:/var/vmail/%d/%n"
    imap_user               = "healthcheck@example.com"
    imap_password           = env("MAIL_IMAP_PASSWORD")
  }

  # Every quarter of an hour, on the minute.
  consistency {
    schedule           = "*/15 * * * *"
    quiesce_timeout    = "5s"
    on_quiesce_failure = "crash_consistent"
  }

  rpo {
    journal = "30m"
  }

  retention {
    journal      = "7d"
    keep_daily   = 30
    keep_monthly = 12
  }
}
