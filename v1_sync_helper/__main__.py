from v1_sync_helper.cli import main

main()
