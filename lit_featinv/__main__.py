from .app.console import main

main()
