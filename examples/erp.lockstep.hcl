# An ERP on MariaDB, with InnoDB data and the binary/redo logs on separate
# volumes. MariaDB is quiesced with FLUSH TABLES WITH READ LOCK after the ERP
# application has suspended its batch jobs, and resumed before them.
plugin "mysql" {
  source = "builtin"
}

service "erp" {
  volume "mariadb-data" {
    size       = "500GiB"
    block_size = 4096
    initiators = ["iqn.2026-11.com.example:erp-db"]
  }

  volume "mariadb-log" {
    size        = "100GiB"
    initiators  = ["iqn.2026-11.com.example:erp-db"]
    target_name = "iqn.2026-11.com.example.storage:erp-db-log"
  }

  app "mysql" "mariadb" {
    volumes  = ["mariadb-data", "mariadb-log"]
    dsn      = "lockstep@tcp(erp-db.example.com:3306)/"
    password = env("ERP_MARIADB_PASSWORD")
    host     = "erp-db.example.com"
  }

  app "exec" "erp-batch" {
    depends_on = ["mariadb"]
    host       = "erp-app.example.com"
    freeze     = ["/opt/erp/bin/erpctl", "batch", "suspend"]
    thaw       = ["/opt/erp/bin/erpctl", "batch", "resume"]
    health     = ["/opt/erp/bin/erpctl", "status"]
    on_error   = "fail"
  }

  # Hourly at five past, around the clock.
  consistency {
    schedule = "5 * * * *"
  }

  rpo {
    journal = "90m"
  }

  retention {
    journal      = "14d"
    keep_daily   = 31
    keep_weekly  = 12
    keep_monthly = 24
    keep_yearly  = 7
  }
}
