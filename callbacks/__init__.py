"""Lightning callbacks: evaluations that run at epoch ends on the teacher backbone."""
