service "shop" {
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}
