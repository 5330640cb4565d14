# Entry point after boot.py: the application owns the loop and leaves the relay off on any error.
import app
import board

app.main(board)
