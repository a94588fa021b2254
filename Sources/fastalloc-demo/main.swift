import FastAlloc
print("placeholder")
